"""The per-invocation `App`: settings loaded on first use, the debug flag, the output streams; shared click parts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from release.settings import Loaded


class App:
    """One invocation: the settings (loaded on first use, so `--help` stays instant), `--debug`, stdout and stderr."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Keep the environment to read (default: the process's); load nothing yet."""
        self.environ = environ
        self.debug = False
        self.flags: dict[str, Any] = {}
        self._loaded: Loaded | None = None

    def load(self, *, every: bool = False, **flags: Any) -> Loaded:
        """The settings: these flags and the group's (None: not given) over the environment over the defaults.

        Only the settings the running command reads must be valid (`every`: all of them). The test hooks the
        settings name are installed here, the one place that reads them.
        """
        if self._loaded is None:
            from release import settings

            context = click.get_current_context(silent=True)
            command = " ".join(context.command_path.split()[1:]) if context is not None and not every else None
            self.flags.update({name: value for name, value in flags.items() if value is not None})
            environ = os.environ if self.environ is None else self.environ
            self._loaded = settings.load(environ, self.flags, command=command)
            if self._loaded.settings.test_crash_at is not None:
                from release.gitops.writer import set_crash_point

                set_crash_point(self._loaded.settings.test_crash_at)
        return self._loaded

    def out(self, text: str, nl: bool = True) -> None:
        """Machine output on stdout."""
        click.echo(text, nl=nl)

    def say(self, message: str) -> None:
        """A human message on stderr."""
        click.echo(message, err=True)


pass_app = click.make_pass_decorator(App, ensure=True)


class SettingsCommand(click.Command):
    """A command whose `--help` ends with every setting it reads: variable, description (from `Settings`)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The usual epilog, then the settings section (read from the settings module only when help is shown)."""
        super().format_epilog(ctx, formatter)
        from release import settings

        path = " ".join(ctx.command_path.split()[1:])
        names = settings.read_by(path)
        if not names:
            return
        rows = [(settings.variable(name), settings.Settings.model_fields[name].description or "") for name in names]
        with formatter.section("Settings (a flag beats the environment, which beats the default)"):
            formatter.write_dl(rows)


class CommandGroup(click.Group):
    """A command group whose commands list their settings in `--help` (subgroups too)."""

    command_class = SettingsCommand
    group_class = type


def debug_here(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--debug` after the subcommand (as release.sh passes it) means what it means before it."""
    if value:
        ctx.ensure_object(App).debug = True


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=debug_here,
    help="Show tracebacks (same as before the command).",
)
via_option = click.option(
    "--via",
    type=click.Choice(["service", "clusterip"]),
    default=None,
    help="How builders reach Nexus: its service DNS name or its ClusterIP (FRACTALOPS_NEXUS_VIA; default service).",
)
targets_file_option = click.option(
    "--targets-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Release targets file: what is built and which values keys pin each image (FRACTALOPS_TARGETS).",
)
