"""All-or-nothing write of several files plus one commit, with a journal that a crash leaves for recovery.

The journal lives from before the first write until the commit is pushed (or given up): a run killed at any point
leaves it, and the next run restores the files, or drops the unpushed commit it made (its parent, and a trailer
naming the journal's id, prove it is the toolkit's own) so that the clone follows its remote again.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
from pathlib import Path

from release.adapters.git import Author, GitRepo
from release.errors import GitError, GuardRefusal, ReleaseError
from release.fsutil import write_atomic

JOURNAL_NAME = "fractalops-gitops.journal"
TRAILER = "Fractalops-Promotion-Id"
# Test hook (the FRACTALOPS_TEST_CRASH_AT setting, installed by the command line): the writer kills its own process
# with SIGKILL at the named point (between-writes, before-commit, after-commit). None in every real run.
_crash_at: str | None = None


def journal_path(repo: GitRepo) -> Path:
    """Where the journal of an in-flight write lives (inside the git directory, never committed)."""
    return repo.git_dir / JOURNAL_NAME


def set_crash_point(point: str | None) -> None:
    """Test hook only: make this process die by SIGKILL when a write reaches `point` (None: never)."""
    global _crash_at
    _crash_at = point


def _test_crash_hook(point: str) -> None:
    """Test hook only: die at `point` when the crash point names it."""
    if _crash_at == point:
        os.kill(os.getpid(), signal.SIGKILL)


def recover(repo: GitRepo) -> list[str]:
    """Finish or undo an interrupted write: restore journaled files, or drop the unpushed commit it made."""
    journal = journal_path(repo)
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise GitError(f"{journal}: unreadable journal ({err}); inspect the working tree, then delete it") from None
    restored: list[str] = []
    head = repo.head()
    if head == entry["head"]:
        for relative, encoded in entry["files"].items():
            original = base64.b64decode(encoded)
            path = repo.root / relative
            current = path.read_bytes() if path.exists() else None
            if current != original:
                write_atomic(path, original)
                restored.append(relative)
        repo.unstage(list(entry["files"]))
    elif head is not None and _own_unpushed_commit(repo, head, entry):
        repo.reset_keep(entry["head"])  # refuses (GitError, journal kept) rather than lose edits made since
        restored = sorted(entry["files"])
    journal.unlink()
    return restored


def _own_unpushed_commit(repo: GitRepo, head: str, entry: dict[str, object]) -> bool:
    """Whether `head` is the commit this journal's write made (child of its head, with its id) and is on no remote."""
    mark = f"{TRAILER}: {entry.get('id')}"
    return (
        bool(entry.get("id"))
        and repo.resolve(f"{head}^") == entry["head"]
        and mark in repo.message(head).splitlines()
        and not repo.on_a_remote(head)
    )


def finish(repo: GitRepo) -> None:
    """The write is over (pushed, or undone): drop its journal."""
    journal_path(repo).unlink(missing_ok=True)


def ensure_clean(repo: GitRepo, paths: list[str]) -> None:
    """Refuse when any of `paths` has uncommitted changes."""
    dirty = repo.dirty(paths)
    if dirty:
        raise GuardRefusal(
            f"{repo.root}: uncommitted changes to {', '.join(sorted(dirty))}; commit or discard them first"
        )


def write_and_commit(
    repo: GitRepo, files: dict[str, bytes], message: str, author: Author, *, until_pushed: bool = False
) -> str:
    """Write every file and commit them together; on any failure every file holds its old bytes again.

    With `until_pushed` the journal outlives the commit: the caller ends it with `finish` once the push is done
    or undone, and a crash before that is recovered by the next run.
    """
    from release.targets import in_repository

    recover(repo)
    head = repo.head()
    if head is None:
        raise GitError(f"{repo.root}: the repository has no commit to build on")
    for relative in files:  # never write through a symlink: the commit would not hold the edit
        in_repository(repo.root, relative, "values file", symlinks=False)
    originals = {relative: (repo.root / relative).read_bytes() for relative in files}
    write_id = secrets.token_hex(8)
    entry = {"head": head, "id": write_id, "files": {k: base64.b64encode(v).decode() for k, v in originals.items()}}
    write_atomic(journal_path(repo), json.dumps(entry).encode())
    try:
        for index, (relative, data) in enumerate(files.items()):
            if index:
                _test_crash_hook("between-writes")
            write_atomic(repo.root / relative, data)
        _test_crash_hook("before-commit")
        sha = repo.commit(list(files), f"{message.rstrip()}\n\n{TRAILER}: {write_id}\n", author)
    except (ReleaseError, OSError, KeyboardInterrupt):
        with contextlib.suppress(ReleaseError, OSError):
            recover(repo)
        raise
    _test_crash_hook("after-commit")
    if not until_pushed:
        finish(repo)
    return sha
