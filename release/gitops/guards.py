"""Release guards as data: compare-and-swap, monotonic source history, no-op detection."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

from release.errors import GitError, GuardRefusal

Verdict = Literal["pass", "noop", "refuse", "forced"]
_SHA = re.compile(r"[0-9a-f]{7,40}")


class SourceHistory(Protocol):
    """What the monotonic guard needs from the source repository."""

    def resolve(self, rev: str) -> str | None:
        """The full sha of `rev`, None if unknown."""

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether `older` is an ancestor of (or equal to) `newer`."""

    def is_shallow(self) -> bool:
        """Whether the repository is a shallow clone (history cut off)."""

    def unshallow(self) -> str | None:
        """Fetch the whole history of a shallow clone; None when done, else why it could not."""


@dataclass(frozen=True)
class Decision:
    """One guard's verdict about one target, with the reason in words."""

    target: str
    guard: Literal["cas", "monotonic", "noop"]
    verdict: Verdict
    detail: str

    def as_dict(self) -> dict[str, str]:
        """Plain data for records and JSON."""
        return asdict(self)


def enforce(decision: Decision, force: bool) -> Decision:
    """A refusal raises GuardRefusal, unless `force` turns it into `forced`."""
    if decision.verdict != "refuse":
        return decision
    if force:
        return Decision(decision.target, decision.guard, "forced", decision.detail + " (overridden by --force)")
    raise GuardRefusal(
        f"{decision.target}: {decision.detail}; --force overrides every guard (for a deliberate rollback)"
    )


def compare_and_swap(target: str, current: str | None, expected: str | None, ours: str) -> Decision:
    """Pass if the file holds what the plan expected (or already our value); refuse otherwise."""
    if expected is None or current == expected:
        return Decision(target, "cas", "pass", f"holds the expected {current}")
    if current == ours:
        return Decision(target, "cas", "pass", f"already holds our {ours}")
    return Decision(target, "cas", "refuse", f"holds {current}, but the plan expected {expected} (compare-and-swap)")


def no_op(
    target: str, current_digest: str | None, current_repository: str | None, ref_repository: str, digest: str
) -> Decision | None:
    """A `noop` decision when the file already pins this digest of this repository."""
    if current_digest == digest and current_repository == ref_repository:
        return Decision(target, "noop", "noop", f"already pins {digest}; nothing to change")
    return None


def _known(history: SourceHistory, revision: str | None) -> str | None:
    """The full sha of `revision` in the source history, None if missing, malformed or unknown."""
    if revision is None or not _SHA.fullmatch(revision):
        return None
    return history.resolve(revision)


def monotonic(
    target: str, pinned: str | None, candidate: str | None, history: SourceHistory | None, *, force: bool = False
) -> Decision:
    """Pass if the candidate's source commit equals or descends from the pinned one; refuse otherwise.

    A shallow clone (CI's default checkout) lacks the history to tell: it is deepened on demand, and if that fails
    the error says so (a GitError, not a refusal that looks like a policy decision; `force` still overrides it).
    """
    decision, history_could_tell = _monotonic(target, pinned, candidate, history)
    if history is None or not history_could_tell or not history.is_shallow():
        return decision
    problem = history.unshallow()
    if problem is None:
        return _monotonic(target, pinned, candidate, history)[0]
    message = (
        f"cannot compare source commits {str(candidate)[:12]} and the pinned {str(pinned)[:12]}: the source "
        f"repository is a shallow clone and fetching its history failed ({problem}); check it out with its whole "
        "history (actions/checkout fetch-depth: 0, or git fetch --unshallow)"
    )
    if force:
        return Decision(target, "monotonic", "refuse", message)
    raise GitError(f"{target}: {message}")


def _monotonic(
    target: str, pinned: str | None, candidate: str | None, history: SourceHistory | None
) -> tuple[Decision, bool]:
    """The monotonic decision, and whether more history could change it (a commit missing, or no common line)."""
    if history is None:
        return Decision(target, "monotonic", "refuse", "no source repository to compare source commits in"), False
    if candidate is None or not _SHA.fullmatch(candidate):
        detail = f"the candidate's source commit is unknown ({candidate!r})"
        return Decision(target, "monotonic", "refuse", detail), False
    if pinned is None or not _SHA.fullmatch(pinned):
        detail = f"the pinned image's source commit is unknown ({pinned!r})"
        return Decision(target, "monotonic", "refuse", detail), False
    new, old = _known(history, candidate), _known(history, pinned)
    fetch = "(git fetch, or point --source-repo at a clone that has it)"
    if new is None:
        detail = f"candidate source commit {candidate} is not in the source repository {fetch}"
        return Decision(target, "monotonic", "refuse", detail), True
    if old is None:
        detail = f"pinned source commit {pinned} is not in the source repository {fetch}"
        return Decision(target, "monotonic", "refuse", detail), True
    if new == old:
        return Decision(target, "monotonic", "pass", f"same source commit {new[:12]} (a rebuild)"), False
    if history.is_ancestor(old, new):
        return Decision(target, "monotonic", "pass", f"{new[:12]} descends from the pinned {old[:12]}"), False
    if history.is_ancestor(new, old):
        return Decision(target, "monotonic", "refuse", f"{new[:12]} is older than the pinned {old[:12]}"), False
    detail = f"{new[:12]} and the pinned {old[:12]} are unrelated histories"
    return Decision(target, "monotonic", "refuse", detail), True
