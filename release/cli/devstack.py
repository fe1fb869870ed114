"""`devstack`: the local build stack (Docker engine, buildx, Nexus stand-in registries on loopback)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from release.cli.app import App, CommandGroup, pass_app

SHAPES = ("local", "cluster")

if TYPE_CHECKING:
    from pathlib import Path


def _state_dir(app: App) -> Path:
    """FRACTALOPS_DEVSTACK_DIR, else the stack's folder in the user's state folder."""
    from release.devstack.paths import default_state_dir

    loaded = app.load()
    return default_state_dir(loaded.settings.devstack_dir, loaded.context.state_home)


@click.group(cls=CommandGroup)
def devstack() -> None:
    """A local build stack: Docker engine, buildx and Nexus stand-ins, on loopback or as hosts in namespaces."""


@devstack.command("up")
@click.option(
    "--shape",
    type=click.Choice(SHAPES),
    default="local",
    show_default=True,
    help="local: one engine and registries on loopback; cluster: nexus, runner-1, runner-2, builder hosts in namespaces.",
)
@pass_app
def up(app: App, shape: str) -> None:
    """Install what is missing, start the stack, print `export` lines for eval."""
    from release.devstack.cluster.commands import up_text

    app.out(up_text(shape, _state_dir(app), app.load().settings.devstack_port_base, log=app.say), nl=False)


@devstack.command("down")
@click.option("--shape", type=click.Choice(SHAPES), help="Only this shape (default: every shape up).")
@pass_app
def down(app: App, shape: str | None) -> None:
    """Stop every process the stack started (every shape): namespaces, links and mounts go too."""
    from release.devstack.cluster.commands import down_all

    down_all(_state_dir(app), app.load().settings.devstack_port_base, log=app.say, only=shape)


@devstack.command("status")
@pass_app
def status(app: App) -> int:
    """Say what runs, where, what each registry holds, and what is unhealthy (exit 1 if anything is)."""
    from release.devstack.cluster.commands import status_text

    text, code = status_text(_state_dir(app), app.load().settings.devstack_port_base)
    app.out(text, nl=False)
    return code


@devstack.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--host", default="runner-1", show_default=True, help="Cluster host: nexus, runner-1, runner-2, builder.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def exec_command(app: App, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside a cluster host (its namespace, docker client, topology, credentials); exit with its code."""
    from release.devstack.cluster.commands import exec_on_host

    exec_on_host(host, command, _state_dir(app), dict(os.environ))


@devstack.command("link")
@click.option("--host", required=True, help="Cluster host whose link is shaped: nexus, runner-1, runner-2, builder.")
@click.option("--rate", help="Rate of both directions in tc syntax (5mbit, 100kbps); 'off' removes it.")
@click.option("--loss", help="Random loss per direction in percent (1%, 0.5); 0 removes it.")
@click.option("--delay", help="Added latency per direction (50ms, 0.2s) through a user-space queue; 0 removes it.")
@click.option(
    "--silence",
    metavar="PORT",
    help="Drop every packet of the host's TCP connections of PORT open now (a peer gone quiet mid-transfer); "
    "connections made later pass. 'off' lifts it.",
)
@click.option("--clear", is_flag=True, help="Remove every limit first.")
@pass_app
def link(
    app: App, host: str, rate: str | None, loss: str | None, delay: str | None, silence: str | None, clear: bool
) -> None:
    """Shape a cluster host's link for this run (options not given keep their value)."""
    from release.devstack.cluster.commands import link

    link(host, rate, loss, delay, clear=clear, silence=silence, state_dir=_state_dir(app), log=app.say)


@devstack.command("smoke")
@click.argument("checks", nargs=-1, required=True, metavar="api=IMAGE_REF worker=IMAGE_REF")
@pass_app
def smoke(app: App, checks: tuple[str, ...]) -> None:
    """Run released images on the engine `docker` reaches: the api answers HTTP, the worker runs its job loop."""
    from release.devstack.smoke import parse_checks, run_check

    for role, image in parse_checks(checks):
        app.out(f"smoke {role}: ok: {run_check(role, image, dict(os.environ)).evidence}")
