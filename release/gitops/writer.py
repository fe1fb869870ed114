"""All-or-nothing write of several files plus one commit, with a journal that a crash leaves for recovery."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
from pathlib import Path

from release.errors import GitError, GuardRefusal, ReleaseError
from release.fsutil import write_atomic
from release.gitops.git import Author, GitRepo

JOURNAL_NAME = "fractalops-gitops.journal"
# Test hook: the writer kills its own process with SIGKILL at the named point (between-writes, before-commit).
TEST_CRASH_ENV = "FRACTALOPS_TEST_CRASH_AT"


def journal_path(repo: GitRepo) -> Path:
    """Where the journal of an in-flight write lives (inside the git directory, never committed)."""
    return repo.git_dir / JOURNAL_NAME


def _test_crash_hook(point: str) -> None:
    """Test hook only: die at `point` when `$FRACTALOPS_TEST_CRASH_AT` names it."""
    if os.environ.get(TEST_CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def recover(repo: GitRepo) -> list[str]:
    """Finish or undo an interrupted write: restore journaled files if their commit never happened."""
    journal = journal_path(repo)
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise GitError(f"{journal}: unreadable journal ({err}); inspect the working tree, then delete it") from None
    restored: list[str] = []
    if repo.head() == entry["head"]:
        for relative, encoded in entry["files"].items():
            original = base64.b64decode(encoded)
            path = repo.root / relative
            current = path.read_bytes() if path.exists() else None
            if current != original:
                write_atomic(path, original)
                restored.append(relative)
        repo.unstage(list(entry["files"]))
    journal.unlink()
    return restored


def ensure_clean(repo: GitRepo, paths: list[str]) -> None:
    """Refuse when any of `paths` has uncommitted changes."""
    dirty = repo.dirty(paths)
    if dirty:
        raise GuardRefusal(
            f"{repo.root}: uncommitted changes to {', '.join(sorted(dirty))}; commit or discard them first"
        )


def write_and_commit(repo: GitRepo, files: dict[str, bytes], message: str, author: Author) -> str:
    """Write every file and commit them together; on any failure every file holds its old bytes again."""
    from release.targets import in_repository

    recover(repo)
    head = repo.head()
    if head is None:
        raise GitError(f"{repo.root}: the repository has no commit to build on")
    for relative in files:  # never write through a symlink: the commit would not hold the edit
        in_repository(repo.root, relative, "values file", symlinks=False)
    originals = {relative: (repo.root / relative).read_bytes() for relative in files}
    write_atomic(
        journal_path(repo),
        json.dumps({"head": head, "files": {k: base64.b64encode(v).decode() for k, v in originals.items()}}).encode(),
    )
    try:
        for index, (relative, data) in enumerate(files.items()):
            if index:
                _test_crash_hook("between-writes")
            write_atomic(repo.root / relative, data)
        _test_crash_hook("before-commit")
        sha = repo.commit(list(files), message, author)
    except (ReleaseError, OSError, KeyboardInterrupt):
        with contextlib.suppress(ReleaseError, OSError):
            recover(repo)
        raise
    journal_path(repo).unlink()
    return sha
