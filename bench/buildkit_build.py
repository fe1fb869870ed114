"""Benchmark: building buildkitd/buildctl from Debian 13's Go sources, cold and from the caches; binary sizes.

Usage (root, Debian 12 or 13):
    .venv/bin/python bench/buildkit_build.py                 # machine cache /var/cache/fractalops-devstack
    .venv/bin/python bench/buildkit_build.py --machine-cache /var/tmp/fx-bk-cold   # a cold build in a fresh cache
A machine cache that already holds a build makes the first figure a cache copy, not a build: the result says which.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from release.devstack.buildkit import (
    MACHINE_CACHE,
    BuildkitBinaries,
    ensure_buildkit,
    find_machine_build,
    recipe_digest,
)

RESULTS = Path(__file__).with_name("results") / "buildkit_build.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(cache_dir: Path, machine_cache: Path) -> tuple[float, BuildkitBinaries]:
    started = time.monotonic()
    binaries = ensure_buildkit(cache_dir, log, machine_cache=machine_cache)
    return round(time.monotonic() - started, 3), binaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine-cache", type=Path, default=MACHINE_CACHE)
    args = parser.parse_args()
    cold = find_machine_build(args.machine_cache, recipe_digest()) is None
    scratch = Path(tempfile.mkdtemp(prefix="fx-bk-bench-"))
    try:
        first_s, binaries = timed(scratch / "stack-a", args.machine_cache)
        machine_s, _ = timed(scratch / "stack-b", args.machine_cache)
        local_s, _ = timed(scratch / "stack-a", args.machine_cache)
        info = binaries.info()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "command": "bench/buildkit_build.py"
        + (f" --machine-cache {args.machine_cache}" if args.machine_cache != MACHINE_CACHE else ""),
        "first_call": "cold build" if cold else "copy from the machine cache (already built)",
        "seconds": {
            "first_call": first_s,
            "new_stack_from_machine_cache": machine_s,
            "same_stack_again": local_s,
        },
        "build_seconds": info["build_seconds"],
        "binary_mb": {name: round(entry["size"] / 1e6, 1) for name, entry in info["binaries"].items()},
        "debian_packages": info["debian_packages"],
        "download_mb": round(info["download_bytes"] / 1e6, 1),
        "version": info["version"],
        "go": info["go"],
        "cpus": os.cpu_count(),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
