"""GitHub Actions files ($GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY): checked before any work, appended after it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from release.errors import ConfigError


def check_appendable(variable: str, path: Path | None) -> None:
    """The file `variable` names (if any) can be appended to; else a ConfigError (found before a push, not after)."""
    if path is None:
        return
    value = str(path)
    real = Path(os.path.realpath(path))  # a symlink is checked where it points
    if real.exists():
        if real.is_dir():
            raise ConfigError(f"{variable}={value!r}: is a folder, not a file")
        if not os.access(real, os.W_OK):
            raise ConfigError(f"{variable}={value!r}: not writable")
        return
    parent = real.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{variable}={value!r}: {str(parent)!r} is a file, not a folder")
    if not parent.is_dir():
        raise ConfigError(f"{variable}={value!r}: the folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{variable}={value!r}: cannot create a file in {str(parent)!r}")


def append_image_refs(path: Path, refs: Mapping[str, str]) -> None:
    """Append `image_ref_<target>=<ref>` lines to $GITHUB_OUTPUT."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(f"image_ref_{target}={ref}\n" for target, ref in refs.items())


def append_summary(path: Path, text: str) -> None:
    """Append Markdown to $GITHUB_STEP_SUMMARY."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def warning_annotation(title: str, message: str) -> str:
    """A `::warning::` workflow command line, its title and message escaped as the Actions toolkit does."""

    def data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    prop = data(title).replace(":", "%3A").replace(",", "%2C")
    return f"::warning title={prop}::{data(message)}"
