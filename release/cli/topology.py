"""`topology`: validate the topology and render what derives from it (environment, registries.yaml, buildkitd.toml)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from release.cli.app import App, CommandGroup, pass_app, via_option

if TYPE_CHECKING:
    from release.settings import Loaded
    from release.topology.model import Topology


def _topology(loaded: Loaded) -> Topology:
    """The validated topology the settings name."""
    from release.topology import load_topology

    return load_topology(loaded.topology_file)


@click.group(cls=CommandGroup)
def topology() -> None:
    """Validate the topology and render what derives from it."""


@topology.command("check")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), help="Repository to scan.")
@pass_app
def check(app: App, root: Path | None) -> int:
    """Validate the topology and scan code, scripts and workflows for baked cache addresses."""
    from release.topology.policy import scan, scanned_topology

    loaded = app.load()
    given = _topology(loaded)
    base = (root or loaded.repo_root or Path.cwd()).resolve()
    topo, committed = scanned_topology(base, given)
    if committed is not None:
        shown = committed.relative_to(base)
        app.say(f"topology check: {loaded.topology_file} is a loopback stand-in; scanning with {shown}")
    findings = scan(base, topo)
    for finding in findings:
        app.out(finding.render(base))
    if findings:
        app.say(f"topology check: {len(findings)} finding(s) under {base}")
        return 1
    app.say(f"topology check: ok ({base})")
    return 0


@topology.command("render-env")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["shell", "dotenv", "github", "json"]),
    default="shell",
    show_default=True,
)
@via_option
@pass_app
def render_env(app: App, fmt: str, via: str | None) -> None:
    """Print the FRACTALOPS_* environment (github: append to $GITHUB_ENV)."""
    from release.topology.env import append_github_env, format_env, render_env

    loaded = app.load(nexus_via=via)
    text = format_env(render_env(_topology(loaded), loaded.settings.nexus_via), fmt)
    github_env = loaded.context.github_env
    if fmt == "github" and github_env is not None:
        app.say(f"appended {append_github_env(github_env, text)} line(s) to $GITHUB_ENV")
    else:
        app.out(text, nl=False)


@topology.command("render-registries")
@click.option(
    "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here (mode 0600; a symlink is refused)."
)
@click.option("--check", "check_file", type=click.Path(path_type=Path, dir_okay=False), help="Compare a node's file.")
@pass_app
def render_registries(app: App, output: Path | None, check_file: Path | None) -> int:
    """Render the K3s registries.yaml (password from FRACTALOPS_NEXUS_PULL_PASSWORD)."""
    from release.errors import UsageError
    from release.topology.k3s import drift, pull_password, render_registries, write_registries

    if output and check_file:
        raise UsageError("--output and --check exclude each other")
    loaded = app.load()
    text = render_registries(_topology(loaded), pull_password(loaded.settings.nexus_pull_password))
    if check_file:
        diff = drift(check_file, text)
        if diff:
            app.out(diff, nl=False)
            app.say(f"{check_file}: drifted from the topology")
            return 1
        app.say(f"{check_file}: in sync")
    elif output:
        write_registries(output, text)
        app.say(f"wrote {output} (mode 0600)")
    else:
        if sys.stdout.isatty():
            raise UsageError("refusing to print a file holding the pull password to a terminal; use --output FILE")
        app.out(text, nl=False)
    return 0


@topology.command("render-buildkitd")
@via_option
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here instead of stdout (a new file gets 0644 less the umask; a symlink is refused).",
)
@pass_app
def render_buildkitd(app: App, via: str | None, output: Path | None) -> None:
    """Render buildkitd.toml: docker.io/ghcr.io mirrored to the docker-group, HTTP connectors."""
    from release.fsutil import write_atomic
    from release.topology.buildkitd import render_buildkitd

    loaded = app.load(nexus_via=via)
    text = render_buildkitd(_topology(loaded), loaded.settings.nexus_via)
    if output:
        write_atomic(output, text.encode())
        app.say(f"wrote {output}")
    else:
        app.out(text, nl=False)


@topology.command("show")
@pass_app
def show(app: App) -> None:
    """Print the validated topology as JSON."""
    app.out(_topology(app.load()).model_dump_json(indent=2))
