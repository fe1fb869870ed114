"""The root command group and `run()`, the one place where an exception becomes an exit code."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from release.cli import builder, devstack, env, events, promote, runtime, topology
from release.cli.app import App, CommandGroup, debug_option

PROG = "fractalops-release"
INTERRUPTED = "files are written atomically, and a GitOps write cut short is restored from its journal on the next run"


class RootGroup(CommandGroup):
    """The root group: started in process (tests, `python -m release`) it still exits through `run()`."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run through `run()`: its exit code ends the process (standalone) or is returned."""
        code = run(args)
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--topology",
    "topology_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Topology file (FRACTALOPS_TOPOLOGY; default: ops/topology/fractalops.yaml of this repository).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks (the exit code stays the same).")
@click.version_option(package_name="fractalops-release")
@click.pass_context
def main(ctx: click.Context, topology_path: Path | None, debug: bool) -> None:
    """Release the FractalOps API and worker images through the Nexus cache plane."""
    app = ctx.ensure_object(App)
    app.debug = app.debug or debug
    app.flags["topology"] = topology_path


for command in (
    topology.topology,
    devstack.devstack,
    runtime.runtime,
    promote.promote,
    builder.builder_group,
    events.events,
    env.env,
):
    main.add_command(command)


def _debug_everywhere(group: click.Group) -> None:
    """Every subcommand takes --debug too: release.sh puts the subcommand first."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _debug_everywhere(command)
        elif not any(param.name == "debug" for param in command.params):
            debug_option(command)


_debug_everywhere(main)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends a run the way Ctrl-C does: running builds are stopped and recorded, nothing is half-written."""
    from release.errors import Terminated

    raise Terminated


def _invoke(app: App, args: Sequence[str] | None) -> int:
    """Parse and run the command; its exit status (an int a command returns, else 0)."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        with main.make_context(PROG, argv, obj=app) as ctx:
            result = main.invoke(ctx)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    return result if isinstance(result, int) else 0


def run(args: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status. The one place where exceptions become exit codes.

    A ReleaseError exits with its own code, an OSError 1, a click usage error 2, Ctrl-C 130 and SIGTERM 143; each
    is one line on stderr. `--debug` only adds the traceback: the exit code is the same with or without it.
    An interrupted console run (no `args`) ignores further signals until the process is gone; a run in process
    (`args` given: tests, another program) gets its caller's signal handlers back.
    """
    from release.errors import ReleaseError, Terminated

    app = App()
    in_main_thread = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    if in_main_thread:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _invoke(app, args)
    except ReleaseError as err:
        _traceback_if(app)
        app.say(f"error: {err}")
        return err.exit_code
    except click.exceptions.UsageError as err:  # the command line itself: no traceback of the parser, even with --debug
        hint = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
        app.say(f"error: {err.format_message()}{hint}".replace("\n", " "))
        return 2
    except click.exceptions.ClickException as err:
        _traceback_if(app)
        app.say(f"error: {err.format_message()}")
        return err.exit_code
    except OSError as err:  # a file the user named could not be written or read: one line, not a traceback
        _traceback_if(app)
        where = f"{err.filename}: " if err.filename else ""
        app.say(f"error: {where}{err.strerror or err}")
        return 1
    except KeyboardInterrupt as err:
        if in_main_thread and args is None:  # ending: more Ctrl-C (a key held down) must not become a death by signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            saved = {}
        _traceback_if(app)
        terminated = isinstance(err, Terminated)
        app.say(f"{'terminated' if terminated else 'interrupted'}: {INTERRUPTED}")
        return 143 if terminated else 130
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be set back
                signal.signal(sig, handler)


def console() -> NoReturn:
    """The process entry point (`python -m release`, the `fractalops-release` script): run, flush, end at once.

    os._exit skips the interpreter's teardown of every module it imported, 0.1-0.2 s of CPU at the end of every
    release (bench/cluster_bench.py, driver_overhead). Nothing is left to that teardown: files are closed and the
    builds' threads joined before `run()` returns; a promotion preview still running after a failed build is dropped.
    """
    code = run()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away, a closed stream: nothing to reach
            stream.flush()
    os._exit(code)


def _traceback_if(app: App) -> None:
    """With --debug, the traceback first; the message and the exit code stay what they are without it."""
    if app.debug:
        traceback.print_exc()
