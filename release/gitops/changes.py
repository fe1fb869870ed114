"""A promotion as plain data: candidates, per-target old and new values, guard decisions and the diff."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.errors import ConfigError
from release.gitops.guards import Decision, SourceHistory, compare_and_swap, enforce, monotonic, no_op
from release.gitops.yamledit import read_values, replace_values
from release.targets import Target

# (repository, digest) of the currently pinned image → its source commit, None if unknown.
PinnedLookup = Callable[[str, str], str | None]


@dataclass(frozen=True)
class Candidate:
    """An image to pin: the target, its pinned reference and where its source commit came from."""

    target: str
    image_ref: str
    repository: str
    tag: str | None
    digest: str
    revision: str | None
    revision_source: str


@dataclass(frozen=True)
class TargetChange:
    """The values keys of one target before and after (role → value); `noop` if nothing changes."""

    target: str
    file: str
    paths: dict[str, str]
    old: dict[str, str | None]
    new: dict[str, str]
    noop: bool


@dataclass(frozen=True)
class Evaluation:
    """The outcome of checking candidates against the files as they are now."""

    changes: tuple[TargetChange, ...]
    decisions: tuple[Decision, ...]
    texts: dict[str, str]
    before: dict[str, str]

    def diff(self) -> str:
        """The unified diff of every file that changes."""
        return unified_diff(self.before, self.texts)


@dataclass(frozen=True)
class PromotionPlan:
    """What a promotion will do, computed before anything is written; printable for dry runs."""

    repo_root: Path
    candidates: tuple[Candidate, ...]
    changes: tuple[TargetChange, ...]
    decisions: tuple[Decision, ...]
    diff: str
    force: bool
    policy: str
    context: Any = field(default=None, repr=False, compare=False)

    @property
    def noop(self) -> bool:
        """Whether every target already pins its candidate."""
        return all(change.noop for change in self.changes)

    def render(self) -> str:
        """A human summary followed by the diff."""
        lines = [f"promotion plan for {self.repo_root}:"]
        for candidate in self.candidates:
            lines.append(f"  {candidate.target}: {candidate.image_ref} (source {candidate.revision or 'unknown'})")
        for decision in self.decisions:
            lines.append(f"  guard {decision.guard} {decision.target}: {decision.verdict}: {decision.detail}")
        lines.append(self.diff if self.diff else "  (no change: every target already pins its image)")
        return "\n".join(lines).rstrip("\n") + "\n"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "repo_root": str(self.repo_root),
            "candidates": [vars(c) for c in self.candidates],
            "changes": [vars(c) for c in self.changes],
            "decisions": [d.as_dict() for d in self.decisions],
            "diff": self.diff,
            "force": self.force,
            "policy": self.policy,
        }


def unified_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """`git diff`-style unified diff of the files whose text changes."""
    chunks: list[str] = []
    for path in sorted(after):
        if before.get(path) == after[path]:
            continue
        old = before.get(path, "").splitlines(keepends=True)
        new = after[path].splitlines(keepends=True)
        chunks.extend(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in chunks)


def new_values(target: Target, candidate: Candidate) -> dict[str, str]:
    """Role → new value for every configured key of `target`."""
    keys = target.values
    values = {"repository": candidate.repository, "digest": candidate.digest}
    if keys.tag is not None:
        derived = (
            keys.tag_format.format(short=candidate.revision[:7], revision=candidate.revision)
            if candidate.revision
            else None
        )
        names_it = (
            candidate.tag is not None
            and candidate.revision is not None
            and (
                candidate.tag == derived
                or (len(bare := candidate.tag.removeprefix("sha-")) >= 7 and candidate.revision.startswith(bare))
            )
        )
        if candidate.tag and derived and not names_it:
            raise ConfigError(
                f"{candidate.target}: {candidate.image_ref}: the tag {candidate.tag!r} does not name the image's source "
                f"commit {candidate.revision[:12] if candidate.revision else '?'} (want {derived!r}); give the ref "
                "without a tag (repository@sha256:…) or with that one"
            )
        if candidate.tag:
            values["tag"] = candidate.tag
        elif derived:
            values["tag"] = derived
        else:
            raise ConfigError(
                f"{candidate.target}: {candidate.image_ref}: no tag in the reference and no source commit to derive "
                f"{keys.tag} from"
            )
    if keys.revision is not None:
        values["revision"] = candidate.revision or "unknown"
    return values


def evaluate(
    candidates: tuple[Candidate, ...],
    targets: Mapping[str, Target],
    texts: Mapping[str, str],
    *,
    expected: Mapping[str, Mapping[str, str | None]] | None,
    history: SourceHistory | None,
    pinned_lookup: PinnedLookup,
    force: bool,
) -> Evaluation:
    """Check every guard against `texts` (file → content) and compute the edited texts; raise on refusal."""
    changes: list[TargetChange] = []
    decisions: list[Decision] = []
    edits: dict[str, dict[str, tuple[str | None, str]]] = {}
    for candidate in candidates:
        target = targets[candidate.target]
        paths = target.values.paths()
        file = target.values.file
        by_path = read_values(texts[file], list(paths.values()), source=file)
        old = {role: by_path[path] for role, path in paths.items()}
        new = new_values(target, candidate)
        skip = no_op(candidate.target, old.get("digest"), old.get("repository"), candidate.repository, candidate.digest)
        if skip is not None:
            decisions.append(skip)
            changes.append(TargetChange(candidate.target, file, paths, old, new, True))
            continue
        want = None if expected is None else expected.get(candidate.target)
        decisions.append(enforce(_cas(candidate.target, old, want, new), force))
        pinned = old.get("revision")
        if pinned is None and old.get("repository") and old.get("digest"):
            pinned = pinned_lookup(str(old["repository"]), str(old["digest"]))
        decisions.append(enforce(monotonic(candidate.target, pinned, candidate.revision, history, force=force), force))
        changes.append(TargetChange(candidate.target, file, paths, old, new, False))
        file_edits = edits.setdefault(file, {})
        for role, value in new.items():
            file_edits[paths[role]] = (old[role], value)
    after = {file: replace_values(texts[file], file_edits, source=file) for file, file_edits in edits.items()}
    before = {file: texts[file] for file in after}
    return Evaluation(tuple(changes), tuple(decisions), after, before)


def _cas(
    target: str, old: Mapping[str, str | None], want: Mapping[str, str | None] | None, new: Mapping[str, str]
) -> Decision:
    """Compare-and-swap over all keys of a target, summarised as one decision."""
    if want is None:
        return Decision(target, "cas", "pass", "not checked: the remote moved; the monotonic guard decides")
    for role, current in old.items():
        decision = compare_and_swap(target, current, want.get(role), new[role])
        if decision.verdict != "pass":
            return Decision(target, "cas", "refuse", f"{role} {decision.detail}")
    return Decision(target, "cas", "pass", "the file holds what the plan expected")
