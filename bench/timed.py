"""Run commands one after another where this process runs (e.g. on a cluster host) and print how long they took.

Usage: `timed.py '<JSON list of argv lists>'`; prints `{"seconds": …, "codes": […]}`. Timing inside the host keeps
the cost of reaching it (`devstack exec`) out of both sides of a ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def main() -> None:
    """Time the commands; their output is dropped, their exit codes are printed."""
    commands = json.loads(sys.argv[1])
    started = time.perf_counter()
    codes = [
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode
        for argv in commands
    ]
    print(json.dumps({"seconds": round(time.perf_counter() - started, 4), "codes": codes}))


if __name__ == "__main__":
    main()
