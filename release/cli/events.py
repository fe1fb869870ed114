"""`events`: what the Build Plane Events of past releases say."""

from __future__ import annotations

import json
from pathlib import Path

import click

from release.cli.app import App, CommandGroup, pass_app


@click.group(cls=CommandGroup)
def events() -> None:
    """Build Plane Events recorded by releases."""


@events.command("summary")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@pass_app
def summary(app: App, file: Path | None, json_output: bool) -> None:
    """Failure rate, p50/p95 duration, cache availability and cache export failures of FILE.

    A torn line (a write cut short) is skipped and reported. FILE defaults to $FRACTALOPS_BUILD_EVENTS_FILE,
    else ~/.local/state/fractalops-release/build-events.jsonl.
    """
    from release.events import read_events, render_summary, summarize, torn_note

    path = app.load(build_events_file=file).events_file
    log = read_events(path)
    if log.torn:
        app.say(torn_note(path, log.torn))
    result = summarize(log)
    app.out(json.dumps(result, indent=2) if json_output else render_summary(result), nl=json_output)
