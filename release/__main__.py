"""Entry point for `python -m release`."""

import sys

from release.cli import run

sys.exit(run())
