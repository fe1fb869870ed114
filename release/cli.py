"""The command line: thin click wiring over click-free modules, imported lazily so --help is fast."""

from __future__ import annotations

import functools
import gc
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Per-invocation state: the topology path and the debug flag."""

    def __init__(self, topology_path: Path | None, debug: bool) -> None:
        """Keep the options; load nothing yet."""
        self.topology_path = topology_path
        self.debug = debug

    def topology(self) -> Any:
        """Load and validate the topology (lazily)."""
        from release.topology import load_topology

        return load_topology(self.topology_path)


def say(message: str) -> None:
    """A human message on stderr."""
    click.echo(message, err=True)


def handled(func: F) -> F:
    """Turn the project's errors into a one-line message and their exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from release.errors import ReleaseError

        ctx = click.get_current_context(silent=True)
        app = ctx.find_object(App) if ctx is not None else None

        def traceback_if_debug() -> None:
            """With --debug, the traceback first; the message and the exit code stay what they are without it."""
            if app is not None and app.debug:
                import traceback

                traceback.print_exc()

        try:
            return func(*args, **kwargs)
        except ReleaseError as err:
            traceback_if_debug()
            say(f"error: {err}")
            sys.exit(err.exit_code)
        except OSError as err:  # a file the user named could not be written or read: one line, not a traceback
            traceback_if_debug()
            where = f"{err.filename}: " if err.filename else ""
            say(f"error: {where}{err.strerror or err}")
            sys.exit(1)
        except KeyboardInterrupt as err:
            # Ending already: more Ctrl-C (a key held down) must not turn exit 130 into a death by signal.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            traceback_if_debug()
            what, code = _interruption(err)
            say(
                f"{what}: files are written atomically, and a GitOps write cut short is restored from its journal "
                "on the next run"
            )
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


def _interruption(err: BaseException | None) -> tuple[str, int]:
    """("terminated", 143) when SIGTERM (`Terminated`) ended the run, else ("interrupted", 130): Ctrl-C."""
    from release.errors import Terminated

    while err is not None:  # click turns an interrupt into Abort; the signal's own exception is its context
        if isinstance(err, Terminated):
            return "terminated", 143
        err = err.__cause__ or err.__context__
    return "interrupted", 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--topology",
    "topology_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="FRACTALOPS_TOPOLOGY",
    help="Topology file (default: ops/topology/fractalops.yaml of this repository).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="fractalops-release")
@click.pass_context
def main(ctx: click.Context, topology_path: Path | None, debug: bool) -> None:
    """Release the FractalOps API and worker images through the Nexus cache plane."""
    ctx.obj = App(topology_path, debug)


pass_app = click.make_pass_decorator(App)
targets_file_option = click.option(
    "--targets-file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="FRACTALOPS_TARGETS",
    help="Release targets file: what is built and which values keys pin each image [env FRACTALOPS_TARGETS].",
)
via_option = click.option(
    "--via",
    type=click.Choice(["service", "clusterip"]),
    default="service",
    envvar="FRACTALOPS_NEXUS_VIA",
    show_default=True,
    help="How builders reach Nexus: its service DNS name or its ClusterIP [env FRACTALOPS_NEXUS_VIA].",
)


# --- topology ---------------------------------------------------------------------------------


@main.group()
def topology() -> None:
    """Validate the topology and render what derives from it."""


@topology.command("check")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), help="Repository to scan.")
@pass_app
@handled
def topology_check(app: App, root: Path | None) -> None:
    """Validate the topology and scan code, scripts and workflows for baked cache addresses."""
    from release.topology import load_topology
    from release.topology.load import RELATIVE_PATH, repo_root
    from release.topology.policy import is_local_stand_in, scan

    topo = app.topology()
    base = (root or repo_root() or Path.cwd()).resolve()
    if is_local_stand_in(topo) and (base / RELATIVE_PATH).is_file():
        # A loopback topology (the local stack's) is valid, but its addresses are the stand-ins' own defaults:
        # the scan for baked production addresses uses the committed topology.
        say(
            f"topology check: {app.topology_path or 'the topology'} is a loopback stand-in; scanning with {RELATIVE_PATH}"
        )
        topo = load_topology(base / RELATIVE_PATH)
    findings = scan(base, topo)
    for finding in findings:
        click.echo(finding.render(base))
    if findings:
        say(f"topology check: {len(findings)} finding(s) under {base}")
        sys.exit(1)
    say(f"topology check: ok ({base})")


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
@handled
def topology_render_env(app: App, fmt: str, via: str) -> None:
    """Print the FRACTALOPS_* environment (github: append to $GITHUB_ENV)."""
    import os

    from release.topology.env import format_env, render_env

    text = format_env(render_env(app.topology(), via), fmt)
    github_env = os.environ.get("GITHUB_ENV")
    if fmt == "github" and github_env:
        with open(github_env, "a", encoding="utf-8") as handle:
            handle.write(text)
        say(f"appended {text.count(chr(10))} line(s) to $GITHUB_ENV")
    else:
        click.echo(text, nl=False)


@topology.command("render-registries")
@click.option(
    "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here (mode 0600; a symlink is refused)."
)
@click.option("--check", "check_file", type=click.Path(path_type=Path, dir_okay=False), help="Compare a node's file.")
@pass_app
@handled
def topology_render_registries(app: App, output: Path | None, check_file: Path | None) -> None:
    """Render the K3s registries.yaml (password from FRACTALOPS_NEXUS_PULL_PASSWORD)."""
    from release.errors import UsageError
    from release.topology.registries import drift, pull_password, render_registries, write_registries

    if output and check_file:
        raise UsageError("--output and --check exclude each other")
    topo = app.topology()
    password = pull_password()
    text = render_registries(topo, password)
    if check_file:
        diff = drift(check_file, text)
        if diff:
            click.echo(diff, nl=False)
            say(f"{check_file}: drifted from the topology")
            sys.exit(1)
        say(f"{check_file}: in sync")
    elif output:
        write_registries(output, text)
        say(f"wrote {output} (mode 0600)")
    else:
        if sys.stdout.isatty():
            raise UsageError("refusing to print a file holding the pull password to a terminal; use --output FILE")
        click.echo(text, nl=False)


@topology.command("render-buildkitd")
@via_option
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here instead of stdout (a new file gets 0644 less the umask; a symlink is refused).",
)
@pass_app
@handled
def topology_render_buildkitd(app: App, via: str, output: Path | None) -> None:
    """Render buildkitd.toml: docker.io/ghcr.io mirrored to the docker-group, HTTP connectors."""
    from release.fsutil import write_atomic
    from release.topology.buildkitd import render_buildkitd

    text = render_buildkitd(app.topology(), via)
    if output:
        write_atomic(output, text.encode())
        say(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@topology.command("show")
@pass_app
@handled
def topology_show(app: App) -> None:
    """Print the validated topology as JSON."""
    click.echo(app.topology().model_dump_json(indent=2))


# --- devstack ---------------------------------------------------------------------------------


@main.group()
def devstack() -> None:
    """A local build stack: Docker engine, buildx and Nexus stand-ins, on loopback or as hosts in namespaces."""


@devstack.command("up")
@click.option(
    "--shape",
    type=click.Choice(["local", "cluster"]),
    default="local",
    show_default=True,
    help="local: one engine and registries on loopback; cluster: nexus, runner-1, runner-2, builder hosts in namespaces.",
)
@handled
def devstack_up(shape: str) -> None:
    """Install what is missing, start the stack, print `export` lines for eval."""
    from release.devstack.cluster.commands import up_text

    click.echo(up_text(shape), nl=False)


@devstack.command("down")
@click.option("--shape", type=click.Choice(["local", "cluster"]), help="Only this shape (default: every shape up).")
@handled
def devstack_down(shape: str | None) -> None:
    """Stop every process the stack started (every shape): namespaces, links and mounts go too."""
    from release.devstack.cluster.commands import down_all

    down_all(only=shape)


@devstack.command("status")
@handled
def devstack_status() -> None:
    """Say what runs, where, what each registry holds, and what is unhealthy (exit 1 if anything is)."""
    from release.devstack.cluster.commands import status_text

    text, code = status_text()
    click.echo(text, nl=False)
    sys.exit(code)


@devstack.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--host", default="runner-1", show_default=True, help="Cluster host: nexus, runner-1, runner-2, builder.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@handled
def devstack_exec(host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside a cluster host (its namespace, docker client, topology, credentials); exit with its code."""
    from release.devstack.cluster.commands import exec_on_host

    exec_on_host(host, command)


@devstack.command("link")
@click.option("--host", required=True, help="Cluster host whose link is shaped: nexus, runner-1, runner-2, builder.")
@click.option("--rate", help="Rate of both directions in tc syntax (5mbit, 100kbps); 'off' removes it.")
@click.option("--loss", help="Random loss per direction in percent (1%, 0.5); 0 removes it.")
@click.option("--delay", help="Added latency per direction (50ms, 0.2s) through a user-space queue; 0 removes it.")
@click.option("--clear", is_flag=True, help="Remove every limit first.")
@handled
def devstack_link(host: str, rate: str | None, loss: str | None, delay: str | None, clear: bool) -> None:
    """Shape a cluster host's link for this run (options not given keep their value)."""
    from release.devstack.cluster.commands import link

    link(host, rate, loss, delay, clear=clear)


# --- runtime release ---------------------------------------------------------------------------


def _debug_here(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--debug` after the subcommand (as release.sh passes it) means what it means before it."""
    app = ctx.find_object(App)
    if value and app is not None:
        app.debug = True


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    callback=_debug_here,
    help="Show tracebacks (same as before the command).",
)


@main.command("runtime")
@click.option("--target", "targets", multiple=True, help="Build only this target (repeatable): api, worker.")
@click.option("--builder", envvar="FRACTALOPS_BUILDER", help="buildx builder (default: the current one).")
@click.option("--platform", "platforms", multiple=True, help="Target platform, passed to buildx (repeatable).")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON document instead of image_ref lines.")
@click.option("--dry-run", is_flag=True, help="Print the plan (targets, tags, cache flags) and build nothing.")
@click.option(
    "--allow-local/--no-allow-local",
    default=None,
    help="Allow a release outside CI [env FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE].",
)
@click.option(
    "--update-gitops/--no-update-gitops",
    default=None,
    help="Promote into the values files [env FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS; default off].",
)
@click.option("--no-cache", "no_cache", is_flag=True, help="Build without the registry cache.")
@click.option(
    "--progress",
    type=click.Choice(["auto", "plain", "tty"]),
    default="auto",
    envvar="FRACTALOPS_PROGRESS",
    show_default=True,
    help="plain: numbered lines (CI); tty: a live line per target; auto: tty at a terminal outside CI.",
)
@targets_file_option
@click.option(
    "--events-file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="FRACTALOPS_BUILD_EVENTS_FILE",
    help="JSONL file for Build Plane Events.",
)
@click.option("--force", is_flag=True, help="Override the compare-and-swap and monotonic GitOps guards.")
@pass_app
@handled
def runtime(
    app: App,
    targets: tuple[str, ...],
    builder: str | None,
    platforms: tuple[str, ...],
    json_output: bool,
    dry_run: bool,
    allow_local: bool | None,
    update_gitops: bool | None,
    no_cache: bool,
    progress: str,
    targets_file: Path | None,
    events_file: Path | None,
    force: bool,
) -> None:
    """Build and push the api and worker images; print one image_ref line per target."""
    from release.driver import ReleaseOptions, run_release

    options = ReleaseOptions(
        targets=targets,
        builder=builder,
        platforms=platforms,
        json_output=json_output,
        dry_run=dry_run,
        allow_local=allow_local,
        update_gitops=update_gitops,
        use_cache=not no_cache,
        progress=progress,
        topology_path=app.topology_path,
        targets_path=targets_file,
        events_file=events_file,
        force=force,
    )
    sys.exit(run_release(options))


# --- promote -----------------------------------------------------------------------------------


@main.command("promote")
@click.argument("pairs", nargs=-1, required=True, metavar="TARGET=IMAGE_REF...")
@click.option("--dry-run", is_flag=True, help="Print the unified diff it would commit; change nothing.")
@click.option("--force", is_flag=True, help="Override compare-and-swap and monotonic refusals (rollbacks).")
@click.option("--json", "json_output", is_flag=True, help="Print the release record as JSON.")
@click.option(
    "--remote",
    default="origin",
    envvar="FRACTALOPS_GITOPS_REMOTE",
    show_default=True,
    help="Remote the GitOps commit is pushed to [env FRACTALOPS_GITOPS_REMOTE].",
)
@click.option(
    "--branch",
    default="main",
    envvar="FRACTALOPS_GITOPS_BRANCH",
    show_default=True,
    help="Branch the GitOps commit is pushed to [env FRACTALOPS_GITOPS_BRANCH].",
)
@click.option(
    "--policy",
    type=click.Choice(["strict", "monotonic"]),
    default="strict",
    show_default=True,
    help="When the remote moved: strict re-checks every expected value; monotonic lets the newest build win.",
)
@click.option(
    "--source-repo",
    type=click.Path(path_type=Path, file_okay=False),
    help="Repository holding the source commits (for the monotonic guard; default: this one).",
)
@targets_file_option
@pass_app
@handled
def promote(
    app: App,
    pairs: tuple[str, ...],
    dry_run: bool,
    force: bool,
    json_output: bool,
    remote: str,
    branch: str,
    policy: str,
    source_repo: Path | None,
    targets_file: Path | None,
) -> None:
    """Pin already-built images (api=<repo>@sha256:… worker=…) in the values files: one commit, pushed.

    Commits are authored as FRACTALOPS_GITOPS_AUTHOR ("Name <email>"; default fractalops-release).
    """
    import os

    from release.checks import output_file
    from release.gitops.commands import parse_pairs, run_promote

    if not dry_run:
        output_file("GITHUB_OUTPUT", os.environ)  # found before the push, not after it
    code = run_promote(
        list(pairs),
        dry_run=dry_run,
        force=force,
        json_output=json_output,
        remote=remote,
        branch=branch,
        source_repo=source_repo,
        topology_path=app.topology_path,
        targets_path=targets_file,
        policy=policy,  # type: ignore[arg-type]
    )
    github_output = os.environ.get("GITHUB_OUTPUT")
    if code == 0 and github_output and not dry_run:
        from release.outputs import write_github_image_refs

        write_github_image_refs(Path(github_output), parse_pairs(list(pairs)))
    sys.exit(code)


# --- builder -----------------------------------------------------------------------------------


@main.group()
def builder() -> None:
    """Shared BuildKit builders configured from the topology."""


@builder.command("create")
@click.option("--name", required=True, help="Builder name.")
@click.option(
    "--driver",
    type=click.Choice(["docker-container", "kubernetes", "remote"]),
    default="kubernetes",
    show_default=True,
)
@click.option("--endpoint", help="remote driver: the buildkitd address (tcp://…).")
@click.option("--replicas", type=int, default=2, show_default=True, help="kubernetes driver: BuildKit pods.")
@click.option("--namespace", default="buildkit", show_default=True, help="kubernetes driver: namespace.")
@click.option(
    "--via",
    type=click.Choice(["service", "clusterip"]),
    default=None,
    envvar="FRACTALOPS_NEXUS_VIA",
    help="How the builder reaches Nexus (default: service for kubernetes, clusterip for docker-container).",
)
@click.option(
    "--config-path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the rendered buildkitd.toml (default: the state folder, per builder).",
)
@click.option("--use", is_flag=True, help="Make it the current builder.")
@click.option("--tls-cacert", type=click.Path(path_type=Path), help="remote driver: CA that signed buildkitd's cert.")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="remote driver: client certificate (mutual TLS).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="remote driver: client certificate's key.")
@click.option("--tls-servername", help="remote driver: the name buildkitd's certificate is checked against.")
@click.option("--dry-run", is_flag=True, help="Print the docker buildx create command and the config; run nothing.")
@pass_app
@handled
def builder_create(
    app: App,
    name: str,
    driver: str,
    endpoint: str | None,
    replicas: int,
    namespace: str,
    via: str | None,
    config_path: Path | None,
    use: bool,
    tls_cacert: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_servername: str | None,
    dry_run: bool,
) -> None:
    """Create a buildx builder (kubernetes, remote or docker-container) with the rendered buildkitd.toml."""
    from release import builder as builder_module

    tls_given = (tls_cacert, tls_cert, tls_key, tls_servername) != (None, None, None, None)
    tls = builder_module.RemoteTLS(tls_cacert, tls_cert, tls_key, tls_servername) if tls_given else None

    if driver != "remote" and config_path is None:
        config_path = builder_module.default_config_path(name)
    plan = builder_module.plan_builder(
        app.topology(),
        name,
        driver,
        endpoint=endpoint,
        replicas=replicas,
        namespace=namespace,
        config_path=config_path,
        via=None if driver == "remote" else via,  # a remote buildkitd is configured where it runs
        use=use,
        tls=tls,
    )
    if dry_run:
        click.echo(plan.render().rstrip("\n"))
        if plan.config_text:
            click.echo(f"\n# {plan.config_path}\n{plan.config_text.rstrip()}")
        return
    if plan.config_path is not None:
        plan.config_path.parent.mkdir(parents=True, exist_ok=True)
    builder_module.create_builder(plan)
    say(f"builder {name} created ({driver})")


# --- events ------------------------------------------------------------------------------------


@main.group()
def events() -> None:
    """Build Plane Events recorded by releases."""


@events.command("summary")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@handled
def events_summary(file: Path | None, json_output: bool) -> None:
    """Failure rate, p50/p95 duration, cache availability and cache export failures of FILE.

    A torn line (a write cut short) is skipped and reported. FILE defaults to $FRACTALOPS_BUILD_EVENTS_FILE,
    else ~/.local/state/fractalops-release/build-events.jsonl.
    """
    import json

    from release.events import default_events_file, read_events, render_summary, summarize, torn_note

    path = file or default_events_file()
    log = read_events(path)
    if log.torn:
        say(torn_note(path, log.torn))
    summary = summarize(log)
    click.echo(json.dumps(summary, indent=2) if json_output else render_summary(summary), nl=not json_output)


def _debug_everywhere(group: click.Group) -> None:
    """Every subcommand takes --debug too: release.sh puts the subcommand first."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _debug_everywhere(command)
        elif not any(param.name == "debug" for param in command.params):
            debug_option(command)


_debug_everywhere(main)


def run() -> None:
    """Console entry point: click's usage errors become one line and exit 2, like the project's own."""
    # Start-up allocates only long-lived objects (modules, models): collecting them costs time and frees nothing.
    # The release driver turns collection back on once its builds are under way; at exit, freezing skips the
    # final pass over every object.
    gc.disable()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        _run()
    finally:
        gc.freeze()


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM ends a run the way Ctrl-C does: running builds are stopped and recorded, nothing is half-written."""
    from release.errors import Terminated

    raise Terminated


def _name_the_variable(err: click.exceptions.UsageError) -> None:
    """A bad value that came from an environment variable is reported under the variable's name."""
    from click.core import ParameterSource

    if not isinstance(err, click.BadParameter) or err.param is None or err.ctx is None or not err.param.name:
        return
    envvar = err.param.envvar
    if err.ctx.get_parameter_source(err.param.name) is ParameterSource.ENVIRONMENT and isinstance(envvar, str):
        err.param_hint = f"'{envvar}' (the environment variable for {err.param.get_error_hint(err.ctx)})"


def _run() -> None:
    """Run the click group; map click's exceptions to one line and an exit code."""
    try:
        # One name in usage lines and hints, however it was started (console script, python -m, release.sh).
        main(standalone_mode=False, prog_name="fractalops-release")
    except click.exceptions.Abort as err:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        what, code = _interruption(err)
        say(what)
        sys.exit(code)
    except click.exceptions.UsageError as err:
        _name_the_variable(err)
        hint = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
        say(f"error: {err.format_message()}{hint}".replace("\n", " "))
        sys.exit(2)
    except click.exceptions.ClickException as err:
        say(f"error: {err.format_message()}")
        sys.exit(err.exit_code)


if __name__ == "__main__":  # pragma: no cover
    run()
