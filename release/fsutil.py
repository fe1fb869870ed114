"""Atomic file writes: a file is either the old bytes or the new bytes, never half."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from release.errors import ConfigError


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    A symlink is followed (the file it names is replaced, the link stays); anything that exists and is
    not a regular file (a device, a FIFO, a folder) is refused rather than replaced.
    """
    path = Path(path)
    if str(path) == "-":
        raise ConfigError("--output -: to print, leave out --output")
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: not a regular file; refusing to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
