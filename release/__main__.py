"""Entry point for `python -m release`."""

from release.cli import console

console()
