"""`python -m release.devstack up|down|status`: a click-free entry point (exports on stdout, progress on stderr)."""

from __future__ import annotations

import argparse
import sys

from release.devstack.stack import down, status, up
from release.devstack.status import render_status
from release.errors import ReleaseError


def main(argv: list[str] | None = None) -> int:
    """Run one devstack command and return its exit status."""
    parser = argparse.ArgumentParser(prog="python -m release.devstack")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            sys.stdout.write(up().exports())
            return 0
        if args.command == "down":
            down()
            return 0
        report = status()
        sys.stdout.write(render_status(report))
        return report.exit_code
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
