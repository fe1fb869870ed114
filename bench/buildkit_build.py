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
    return round(time.monotonic() - started, 4), binaries


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine-cache", type=Path, default=MACHINE_CACHE)
    args = parser.parse_args()
    cold = find_machine_build(args.machine_cache, recipe_digest()) is None
    load_before = load_average()
    scratch = Path(tempfile.mkdtemp(prefix="fx-bk-bench-"))
    try:
        first_s, binaries = timed(scratch / "stack-a", args.machine_cache)
        machine_s, _ = timed(scratch / "stack-b", args.machine_cache)
        local_s, _ = timed(scratch / "stack-a", args.machine_cache)
        info = binaries.info()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result = {
        "command": "bench/buildkit_build.py"
        + (f" --machine-cache {args.machine_cache}" if args.machine_cache != MACHINE_CACHE else ""),
        "cpus": os.cpu_count(),
        # The cold figures are kept from the last run that built; a run on a warm machine cache updates the rest.
        "cold": {
            "first_call_s": first_s,
            "build_seconds": info["build_seconds"],
            "load_average_1m_at_start": load_before,
        }
        if cold
        else previous.get("cold"),
        "cached_s": {
            "new_stack_from_machine_cache": machine_s if cold else first_s,
            "same_stack_again": local_s,
        },
        "binary_mb": {name: round(entry["size"] / 1e6, 1) for name, entry in info["binaries"].items()},
        "debian_packages": info["debian_packages"],
        "download_mb": round(info["download_bytes"] / 1e6, 1),
        "version": info["version"],
        "go": info["go"],
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
