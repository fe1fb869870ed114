"""`env`: every setting with its value and where the value came from (flag, environment, default)."""

from __future__ import annotations

import json

import click

from release.cli.app import App, SettingsCommand, pass_app


@click.command("env", cls=SettingsCommand)
@click.option("--json", "json_output", is_flag=True, help="Print JSON: variable → value and source.")
@pass_app
def env(app: App, json_output: bool) -> None:
    """Print every FRACTALOPS_* setting, its value and its source; secrets are masked."""
    from release.settings import describe

    rows = describe(app.load(every=True))
    if json_output:
        app.out(json.dumps({name: {"value": value, "source": source} for name, value, source in rows}, indent=2))
        return
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        app.out(f"{name.ljust(width)}  {source.ljust(11)}  {value or '(unset)'}")
