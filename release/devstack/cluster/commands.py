"""Click-free command bodies for the CLI: up/down/status over both shapes, exec on a host, shape a link."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from release.adapters import process
from release.devstack.cluster import shape
from release.devstack.cluster.execute import exec_plan
from release.devstack.cluster.hosts import check_host_name
from release.devstack.cluster.links import (
    LinkShape,
    next_silence_number,
    parse_delay,
    parse_loss,
    parse_silence,
    rate_bytes,
    read_shapes,
    shape_link,
)
from release.devstack.install import read_marker
from release.devstack.paths import StackPaths
from release.devstack.stack import state_lock, stderr_log
from release.devstack.status import render_status
from release.errors import OperationError, UsageError

Log = Callable[[str], None]
SHAPES = ("local", "cluster")


def local_recorded(state_dir: Path) -> bool:
    """Return whether the loopback shape was brought up in this state dir."""
    return (Path(state_dir).absolute() / "stack.json").exists()


def up_text(shape_name: str, state_dir: Path, port_base: int | None = None, log: Log = stderr_log) -> str:
    """Bring a shape up (a new one on `port_base`, else the default) and return its export lines."""
    if shape_name == "cluster":
        return shape.up(state_dir, port_base, log=log).exports()
    from release.devstack import up

    return up(state_dir, port_base, log=log).exports()


def down_all(state_dir: Path, port_base: int | None = None, log: Log = stderr_log, only: str | None = None) -> None:
    """Take down every shape the state dir holds, or `only` one (the loopback one also when nothing is recorded)."""
    from release.devstack import down

    cluster = shape.is_recorded(state_dir)
    if only in (None, "cluster") and cluster:
        shape.down(state_dir, log)
    if only == "local" or (only is None and (local_recorded(state_dir) or not cluster)):
        down(state_dir, port_base, log)


def status_text(state_dir: Path, port_base: int | None = None) -> tuple[str, int]:
    """Return the status of each shape the state dir holds, and the exit code (1 if any is unhealthy)."""
    from release.devstack import status

    texts: list[str] = []
    code = 0
    if shape.is_recorded(state_dir):
        report = shape.status(state_dir)
        texts.append(render_status(report))
        code = max(code, report.exit_code)
    if local_recorded(state_dir) or not texts:
        report = status(state_dir, port_base)
        texts.append(render_status(report))
        code = max(code, report.exit_code)
    return "".join(texts), code


def exec_on_host(host: str, command: Sequence[str], state_dir: Path, caller_env: Mapping[str, str]) -> NoReturn:
    """Replace this process with `command` inside the host's namespace and environment (its exit code is ours).

    The command sees `caller_env` (the caller's environment) with the host's own values over it.
    """
    check_host_name(host)
    if not command:
        raise UsageError("devstack exec: no command; give one after `--`, e.g. `devstack exec -- docker info`")
    paths, net = shape.resolve(state_dir, None, existing=True)
    if shape.recorded_base(paths) is None:
        raise OperationError(
            f"devstack exec: no cluster shape in {paths.stack.root}. "
            "What to do: `fractalops-release devstack up --shape cluster`."
        )
    binaries = read_marker(paths.stack)
    if binaries is None:
        raise OperationError(f"devstack exec: the devstack in {paths.stack.root} is not installed; run `devstack up`")
    argv, env = exec_plan(paths, net, host, list(command), binaries, caller_env)
    process.replace(argv, env=env, replace_env=True)


def link(
    host: str,
    rate: str | None,
    loss: str | None,
    delay: str | None = None,
    *,
    clear: bool = False,
    silence: str | None = None,
    state_dir: Path,
    log: Log = stderr_log,
) -> LinkShape:
    """Shape a host's link for this run: `rate`, `loss` (percent), `delay` (each way), `silence` (a port or off); unset ones stay."""
    check_host_name(host)
    off = rate is not None and rate.strip().lower() in ("", "none", "off")
    if rate is not None and not off:
        rate_bytes(rate)
    loss_value = parse_loss(loss) if loss is not None else None
    delay_value = parse_delay(delay) if delay is not None else None
    silence_port = parse_silence(silence) if silence is not None else None
    paths, net = shape.resolve(state_dir, None, existing=True)
    if shape.recorded_base(paths) is None:
        raise OperationError(
            f"devstack link: no cluster shape in {paths.stack.root}. "
            "What to do: `fractalops-release devstack up --shape cluster`."
        )
    target = net.host(host)
    with state_lock(StackPaths(paths.stack.root)):
        recorded = read_shapes(paths.links).get(host, LinkShape())
        current = LinkShape(silence_number=recorded.silence_number) if clear else recorded
        wanted = LinkShape(
            rate=None if off else current.rate if rate is None else rate.strip().lower(),
            loss=current.loss if loss_value is None else loss_value,
            delay_ms=current.delay_ms if delay_value is None else delay_value,
            silenced_port=current.silenced_port if silence is None else silence_port,
            # A new silence gets a number of its own (its mark), so it also silences the connections of earlier ones.
            silence_number=next_silence_number(recorded.silence_number) if silence_port else recorded.silence_number,
        )
        return shape_link(net, target, wanted, paths.host(host), paths.links, log)
