"""TEMPORARY: the pre-redesign entry point that release/cli.py still calls; delete at the merge.

The CLI half's `runtime` command calls `release.build.pipeline.run_release(request, loaded, streams)` with
settings it loaded once; until that lands, this maps the old options onto the same call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.build.inputs import ReleaseRequest
from release.build.pipeline import run_release as run_pipeline
from release.build.report import Streams
from release.settings import load


@dataclass
class ReleaseOptions:
    """What the old CLI passes (its options, environment variables already merged by click)."""

    targets: tuple[str, ...] = ()
    builder: str | None = None
    platforms: tuple[str, ...] = ()
    json_output: bool = False
    dry_run: bool = False
    allow_local: bool | None = None
    update_gitops: bool | None = None
    use_cache: bool = True
    progress: str = "auto"
    topology_path: Path | None = None
    targets_path: Path | None = None
    events_file: Path | None = None
    force: bool = False


def run_release(options: ReleaseOptions, env: Mapping[str, str] | None = None, streams: Streams | None = None) -> int:
    """Load the settings (flag > environment > default) and run the release pipeline."""
    flags: dict[str, Any] = {
        "builder": options.builder,
        "platform": options.platforms,
        "allow_local_runtime_release": options.allow_local,
        "runtime_release_update_gitops": options.update_gitops,
        "progress": options.progress,
        "topology": options.topology_path,
        "targets": options.targets_path,
        "build_events_file": options.events_file,
    }
    loaded = load(os.environ if env is None else env, flags)
    request = ReleaseRequest(options.targets, options.json_output, options.dry_run, options.use_cache, options.force)
    return run_pipeline(request, loaded, streams or Streams())
