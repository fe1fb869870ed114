"""The command line: one module per command group, an `App` per invocation, one `run()` mapping errors to exit codes.

The only package importing click. Command bodies call the core and print; the core is imported inside them, so
`--help` stays instant.
"""

from release.cli.main import console, main, run

__all__ = ["console", "main", "run"]
