"""What a release prints and publishes: image_ref lines, JSON, GitHub outputs and step summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class TargetResult:
    """The outcome of one target in a run."""

    target: str
    image_ref: str | None
    duration_s: float
    result: str
    error: str | None
    cache_import: str
    cache_export: str
    cache_hit_ratio: float | None


def image_ref_lines(results: list[TargetResult]) -> str:
    """Exactly one `image_ref=…` line per built target, nothing else."""
    return "".join(f"image_ref={r.image_ref}\n" for r in results if r.image_ref)


def json_document(results: list[TargetResult], extra: dict[str, Any]) -> str:
    """The --json document."""
    return json.dumps({**extra, "targets": [asdict(r) for r in results]}, indent=2, sort_keys=True) + "\n"


def write_github_outputs(path: Path, results: list[TargetResult]) -> None:
    """Append `image_ref_<target>=…` of the built targets to $GITHUB_OUTPUT."""
    write_github_image_refs(path, {r.target: r.image_ref for r in results if r.image_ref})


def write_github_image_refs(path: Path, refs: dict[str, str]) -> None:
    """Append `image_ref_<target>=<ref>` lines to $GITHUB_OUTPUT."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(f"image_ref_{target}={ref}\n" for target, ref in refs.items())


def step_summary(results: list[TargetResult], title: str) -> str:
    """A Markdown table: target, image_ref, duration, cache outcome."""
    rows = [f"### {title}", "", "| target | image_ref | duration | cache |", "| --- | --- | --- | --- |"]
    for r in results:
        ratio = "" if r.cache_hit_ratio is None else f", {r.cache_hit_ratio * 100:.0f}% steps cached"
        ref = f"`{r.image_ref}`" if r.image_ref else f"failed: {r.error or 'unknown error'}"
        rows.append(
            f"| {r.target} | {ref} | {r.duration_s:.1f} s | import {r.cache_import}, export {r.cache_export}{ratio} |"
        )
    return "\n".join(rows) + "\n"


def write_step_summary(path: Path, text: str) -> None:
    """Append the summary to $GITHUB_STEP_SUMMARY."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
