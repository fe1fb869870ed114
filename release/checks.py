"""TEMPORARY re-exports for modules of the CLI half that still import `release.checks`; delete at the merge.

URL credential helpers live in release.urls, the GitHub files in release.github, build input checks in
release.build.checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from release.github import check_appendable
from release.urls import SinkURL, events_url, mask_credentials

__all__ = ["SinkURL", "events_url", "mask_credentials", "output_file"]


def output_file(variable: str, env: Mapping[str, str]) -> None:
    """The file `env[variable]` names can be appended to (release.github.check_appendable)."""
    value = env.get(variable)
    check_appendable(variable, Path(value) if value else None)
