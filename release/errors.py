"""The project's typed errors, each mapped to a process exit code."""

from __future__ import annotations


class ReleaseError(Exception):
    """Base of every error the toolkit raises on purpose; one line, an exit code."""

    exit_code = 1


class ConfigError(ReleaseError):
    """Bad configuration or usage: a file, a field or a value is wrong (exit 2)."""

    exit_code = 2


class UsageError(ConfigError):
    """A command line or environment variable was used wrongly (exit 2)."""


class OperationError(ReleaseError):
    """An operation failed at run time (exit 1)."""


class EngineError(OperationError):
    """The container engine or buildx failed or is unusable."""


class RegistryError(OperationError):
    """A registry did not answer as expected."""


class GitError(OperationError):
    """A git operation failed."""


class GuardRefusal(OperationError):
    """A release guard refused the operation (opt-in, compare-and-swap, monotonic)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner cancelling the job): handled like an interrupt, exit 143."""


class Unknowable(Exception):
    """What a build would read cannot be told for sure from the files; the caller takes the safe way. One line."""
