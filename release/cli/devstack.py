"""`devstack`: the local build stack (Docker engine, buildx, Nexus stand-in registries on loopback)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from release.cli.app import App, CommandGroup, pass_app

if TYPE_CHECKING:
    from pathlib import Path


def _state_dir(app: App) -> Path:
    """FRACTALOPS_DEVSTACK_DIR, else the stack's folder in the user's state folder."""
    from release.devstack.paths import default_state_dir

    loaded = app.load()
    return default_state_dir(loaded.settings.devstack_dir, loaded.context.state_home)


@click.group(cls=CommandGroup)
def devstack() -> None:
    """A local build stack: Docker engine, buildx and Nexus stand-in registries on loopback."""


@devstack.command("up")
@pass_app
def up(app: App) -> None:
    """Install what is missing, start the stack, print `export` lines for eval."""
    from release.devstack import up

    stack = up(_state_dir(app), app.load().settings.devstack_port_base, log=app.say)
    app.out(stack.exports(), nl=False)


@devstack.command("down")
@pass_app
def down(app: App) -> None:
    """Stop every process the stack started."""
    from release.devstack import down

    down(_state_dir(app), app.load().settings.devstack_port_base, log=app.say)


@devstack.command("status")
@pass_app
def status(app: App) -> int:
    """Say what runs, on which ports, and what is unhealthy (exit 1 if anything is)."""
    from release.devstack import render_status, status

    report = status(_state_dir(app), app.load().settings.devstack_port_base)
    app.out(render_status(report), nl=False)
    return report.exit_code
