"""Benchmark: CLI start-up (`fractalops-release --help`), median of repeated runs, against bare Python."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = int(os.environ.get("BENCH_RUNS", "21"))
RESULTS = Path(__file__).with_name("results") / "cli_startup.json"


def _median_ms(argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    """Measure and write the result file; exit 1 if over the target."""
    exe = Path(sys.executable).with_name("fractalops-release")
    baseline = _median_ms([sys.executable, "-c", "pass"])
    cli = _median_ms([str(exe), "--help"])
    eager = _median_ms([sys.executable, "-c", "import click, pydantic, ruamel.yaml, git, python_on_whales"])
    result = {
        "runs": RUNS,
        "median_ms": {
            "python_noop": round(baseline, 1),
            "cli_help": round(cli, 1),
            "eager_core_imports": round(eager, 1),
        },
        "ratio_cli_vs_eager": round(cli / eager, 3),
        "target_ms": 150,
        "ok": cli <= 150,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
