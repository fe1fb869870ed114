"""The git boundary: the only module importing GitPython (other git calls go through the process adapter).

Every git failure becomes a GitError.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from release.adapters import process
from release.errors import ConfigError, GitError
from release.masking import mask_credentials

AUTHOR_ENV = "FRACTALOPS_GITOPS_AUTHOR"
DEFAULT_AUTHOR = "fractalops-release <release@fractalops.invalid>"
_AUTHOR = re.compile(r" *(?P<name>[^<>]*[^<>\s]) *<(?P<email>[^<>\s]+)> *")
# Porcelain push outcomes that mean "the remote moved under us": fetch, rebase, try again.
_RETRYABLE = (
    "fetch first",
    "non-fast-forward",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
)


@dataclass(frozen=True)
class Author:
    """A commit identity."""

    name: str
    email: str

    def __str__(self) -> str:
        """`Name <email>`."""
        return f"{self.name} <{self.email}>"


def author_problem(text: str) -> str | None:
    """What is wrong with a commit identity `Name <email>` (None: nothing)."""
    if not text.isprintable():  # a newline would forge commit headers; other control characters garble logs
        return "holds a control character (newline, tab, escape…); want 'Name <email>'"
    return None if _AUTHOR.fullmatch(text) else "want 'Name <email>'"


def parse_author(text: str | None = None) -> Author:
    """`text` (the FRACTALOPS_GITOPS_AUTHOR setting), else the default, parsed from `Name <email>`."""
    raw = text or DEFAULT_AUTHOR
    problem = author_problem(raw)
    if problem:
        raise ConfigError(f"{AUTHOR_ENV}: {raw!r}: {problem}")
    match = _AUTHOR.fullmatch(raw)
    assert match is not None  # author_problem found none
    return Author(match.group("name"), match.group("email"))


@dataclass(frozen=True)
class PushOutcome:
    """What a push did: accepted, rejected because the remote moved (retry), or failed."""

    status: Literal["accepted", "moved", "failed"]
    detail: str


@contextmanager
def _git_errors(what: str) -> Iterator[None]:
    """Turn GitPython's errors into GitError naming the operation."""
    from git.exc import GitCommandError
    from git.exc import GitError as GitPythonError

    try:
        yield
    except GitCommandError as err:
        stderr = (err.stderr or "").strip().replace("\n", " ").removeprefix("stderr: ").strip("' ")
        raise GitError(f"git {what} failed (exit {err.status}): {stderr or err}") from err
    except GitPythonError as err:
        raise GitError(f"git {what} failed: {err}") from err


def head_commit(path: Path | str) -> str | None:
    """The commit HEAD of the repository holding `path` points at; None outside a repository or when empty.

    A single `git rev-parse` (no GitPython): the release driver asks this on every run, before it builds.
    """
    argv = ["git", "-C", str(path), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"]
    proc = _git(argv, "rev-parse HEAD")
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def remote_url(path: Path | str, name: str = "origin") -> str | None:
    """The URL of remote `name` of the repository holding `path`; None without one (or outside a repository).

    A single `git remote get-url` (no GitPython): the release driver asks it on every run, for the image labels.
    """
    try:
        proc = _git(["git", "-C", str(path), "remote", "get-url", name], "remote get-url")
    except GitError:
        return None
    url = proc.stdout.strip()
    return url if proc.returncode == 0 and url else None


def _git(argv: list[str], what: str) -> process.Completed:
    """Run one git command to completion through the process adapter (a git that cannot start is a GitError)."""
    try:
        return process.run(argv, check=False, timeout=300.0)
    except (process.ProcessError, OSError) as err:
        raise GitError(f"git {what} failed: {err}") from err


def dirty_paths(root: Path | str, paths: list[str]) -> list[str]:
    """Files under `paths` (relative to `root`) that are not as in HEAD, ignored ones included.

    Changed, staged, renamed (both names), untracked, or git-ignored: an ignored file still reaches a build unless
    .dockerignore excludes it. A single `git status -z` (no GitPython): the release driver asks it on every run, before it builds. Outside a
    git checkout there is nothing to compare with (an empty list); a git that cannot answer is a GitError.
    """
    argv = ["git", "-C", str(root), "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching"]
    proc = _git([*argv, "--", *paths], "status")
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()
        if reason and "not a git repository" in reason[0]:
            return []
        raise GitError(f"git status in {root} failed: {reason[-1] if reason else f'exit {proc.returncode}'}")
    entries = proc.stdout.split("\0")
    found: set[str] = set()
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        found.add(path)
        if "R" in status or "C" in status:  # -z puts the original name in the next field
            if index < len(entries) and entries[index]:
                found.add(entries[index])
            index += 1
    return sorted(found)


class GitRepo:
    """One working tree: read files at revisions, commit paths, fetch, reset, push, ancestry."""

    def __init__(self, path: Path | str) -> None:
        """Open the repository whose working tree holds `path`."""
        from git import Repo
        from git.exc import InvalidGitRepositoryError, NoSuchPathError

        try:
            self._repo: Any = Repo(path, search_parent_directories=True)
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise ConfigError(f"{path}: not inside a git repository") from None
        if self._repo.bare:
            raise ConfigError(f"{path}: a bare repository has no working tree to edit")
        self.root = Path(str(self._repo.working_tree_dir))
        self.git_dir = Path(self._repo.git_dir)

    def _run(self, what: str, *args: str, env: dict[str, str] | None = None) -> str:
        """Run one git command; its stdout."""
        with _git_errors(what):
            return str(self._repo.git.execute(["git", *args], env=env))

    def head(self) -> str | None:
        """The commit HEAD points at (None in an empty repository)."""
        return self.resolve("HEAD")

    def resolve(self, rev: str) -> str | None:
        """The full sha of commit `rev`, None if it does not name a commit here."""
        from git.exc import GitCommandError

        try:
            return str(self._repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")).strip() or None
        except GitCommandError:
            return None

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether commit `older` is an ancestor of (or equal to) `newer`."""
        from git.exc import GitCommandError

        try:
            self._repo.git.merge_base("--is-ancestor", older, newer)
        except GitCommandError as err:
            if err.status == 1:
                return False
            raise GitError(f"git merge-base --is-ancestor {older} {newer} failed: {err.stderr.strip()}") from err
        return True

    def message(self, rev: str) -> str:
        """The full message of commit `rev`."""
        return self._run("log", "log", "-1", "--format=%B", rev, "--")

    def on_a_remote(self, sha: str) -> bool:
        """Whether any remote-tracking branch of this clone contains commit `sha` (i.e. it was pushed or fetched)."""
        refs = self._run("for-each-ref", "for-each-ref", "--contains", sha, "--format=%(refname)", "refs/remotes")
        return bool(refs.strip())

    def show(self, rev: str, path: str) -> bytes | None:
        """The bytes of `path` at `rev`, None if it does not exist there."""
        from git.exc import GitCommandError

        try:
            data = self._repo.git.execute(
                ["git", "show", f"{rev}:{path}"], stdout_as_string=False, strip_newline_in_stdout=False
            )
        except GitCommandError:
            return None
        return bytes(data)

    def is_shallow(self) -> bool:
        """Whether this is a shallow clone (`git clone --depth`, CI's default checkout)."""
        return self._run("rev-parse", "rev-parse", "--is-shallow-repository").strip() == "true"

    def unshallow(self) -> str | None:
        """Fetch the whole history from `origin` (or the only remote); None when done, else why it could not."""
        names = [r.name for r in self._repo.remotes]
        remote = "origin" if "origin" in names else (names[0] if len(names) == 1 else None)
        if remote is None:
            return "no remote to fetch it from"
        try:
            # No prompt for credentials: in CI (persist-credentials: false) an answer can only be a failure.
            self._run(
                "fetch --unshallow", "fetch", "-q", "--no-tags", "--unshallow", remote, env={"GIT_TERMINAL_PROMPT": "0"}
            )
        except GitError as err:
            return mask_credentials(str(err))
        return None

    def dirty(self, paths: list[str]) -> list[str]:
        """The paths among `paths` with staged or unstaged changes (or untracked)."""
        out = self._run("status", "status", "--porcelain", "--untracked-files=all", "--", *paths)
        return [line[3:] for line in out.splitlines() if line.strip()]

    def unstage(self, paths: list[str]) -> None:
        """Make the index hold HEAD's version of `paths` again (files untouched)."""
        if self.head() is not None:
            self._run("reset", "reset", "-q", "HEAD", "--", *paths)

    def commit(self, paths: list[str], message: str, author: Author) -> str:
        """Commit the working-tree content of exactly `paths`; the new commit's sha."""
        env = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
        }
        self._run("commit", "commit", "-q", "--only", "-m", message, "--", *paths, env=env)
        head = self.head()
        if head is None:
            raise GitError("git commit left no HEAD")
        return head

    def check_remote_branch(self, remote: str, branch: str) -> str:
        """The remote branch's tip; ConfigError for a remote this clone lacks, or a branch that remote lacks."""
        if remote not in [r.name for r in self._repo.remotes]:
            shown = mask_credentials(remote)
            raise ConfigError(f"FRACTALOPS_GITOPS_REMOTE / --remote: {shown!r}: {self.root} has no such git remote")
        listing = self._run("ls-remote", "ls-remote", "--heads", remote, f"refs/heads/{branch}")
        if not listing.strip():
            raise ConfigError(
                f"FRACTALOPS_GITOPS_BRANCH / --branch: {branch!r}: {remote} has no such branch "
                "(GitOps commits go to an existing branch; a typo would otherwise start a new one)"
            )
        return listing.split()[0]

    def fetch(self, remote: str, branch: str) -> str | None:
        """Fetch `branch` from `remote`; its tip there (a ConfigError if the remote or the branch does not exist)."""
        self.check_remote_branch(remote, branch)
        self._run("fetch", "fetch", "-q", "--no-tags", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}")
        return self.resolve(f"refs/remotes/{remote}/{branch}")

    def reset_keep(self, rev: str) -> None:
        """Move HEAD (and the branch) to `rev`, updating only files that differ; refuse to lose local edits."""
        self._run("reset --keep", "reset", "-q", "--keep", rev)

    def push(self, remote: str, branch: str) -> PushOutcome:
        """Push HEAD to `remote`'s `branch`, never forced; a rejection because the remote moved is `moved`."""
        with _git_errors("push"):
            status, out, err = self._repo.git.execute(
                ["git", "push", "--porcelain", remote, f"HEAD:refs/heads/{branch}"],
                with_extended_output=True,
                with_exceptions=False,
            )
        refs = [line for line in str(out).splitlines() if line[:1] in " *=+-!" and line.count("\t") >= 2]
        if status == 0 and refs and not any(line.startswith("!") for line in refs):
            return PushOutcome("accepted", refs[0].split("\t")[-1])
        detail = " ".join(line.split("\t")[-1] for line in refs if line.startswith("!")) or str(err).strip()
        # git's own reason ("cannot lock ref …: File exists") is on stderr, not in the porcelain summary.
        reasons = [line.removeprefix("remote: ").strip() for line in str(err).splitlines() if "error:" in line]
        if reasons and reasons[0] not in detail:
            detail = f"{detail}: {reasons[0]}"
        if any(reason in detail for reason in _RETRYABLE):
            return PushOutcome("moved", detail)
        return PushOutcome("failed", detail.replace("\n", " ") or f"exit {status}")
