"""The release record: one JSON line per promotion tying sources, images, guard decisions and the commit."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from release.errors import OperationError
from release.gitops.promote import PromotionResult, as_data


def build_record(result: PromotionResult, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The record of one promotion as plain data."""
    moment = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    candidates = result.plan.candidates
    return {
        "kind": "promotion",
        "at": moment,
        "repo_root": str(result.plan.repo_root),
        "remote": result.remote,
        "branch": result.branch,
        "images": {c.target: c.image_ref for c in candidates},
        "source_commits": {c.target: c.revision for c in candidates},
        "revision_sources": {c.target: c.revision_source for c in candidates},
        "force": result.plan.force,
        "policy": result.plan.policy,
        "outcome": "dry-run"
        if result.dry_run
        else ("noop" if result.noop else ("pushed" if result.pushed else "committed")),
        "push_log": list(result.pushes),
        **as_data(result),
    }


def append_record(record: dict[str, Any], path: Path) -> Path:
    """Append `record` as one JSON line to `path` (the settings' record file) under an exclusive lock; `path`."""
    target = Path(path)
    line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise OperationError(f"{target}: cannot append the release record: {err.strerror}") from None
    return target
