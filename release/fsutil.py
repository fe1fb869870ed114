"""Atomic file writes: a file is either the old bytes or the new bytes, never half."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from release.errors import ConfigError

NEW_FILE_MODE = 0o644  # less the umask; a file holding a secret is written 0600 by its caller


def current_umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by setting it and setting it back."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_regular(path: Path) -> bytes:
    """The bytes of `path`; anything but a regular file (a FIFO, a device, a folder) is a ConfigError at once.

    The file is opened without blocking, so a FIFO nobody writes to cannot hang the caller; OSError passes through.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path}: not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read()
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    A symlink at `path` is refused, never followed: the file it names may be anyone's (a link another user left
    in a sticky folder such as /tmp). Anything else that is not a regular file (a device, a FIFO, a folder) is
    refused too. Without `mode`, a replaced file keeps its mode and a new one gets 0644 less the umask.
    """
    path = Path(path)
    if str(path) == "-":
        raise ConfigError("--output -: to print, leave out --output")
    try:
        found: os.stat_result | None = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        found = None
    if found is not None and stat.S_ISLNK(found.st_mode):
        raise ConfigError(f"{path}: a symbolic link; refusing to write through it (name the file it points to)")
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise ConfigError(f"{path}: not a regular file; refusing to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    if mode is None:
        mode = stat.S_IMODE(found.st_mode) if found is not None else NEW_FILE_MODE & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # replaces the name itself: a link put there meanwhile is replaced, not followed
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def file_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (its folder made if missing) for the `with` block."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
