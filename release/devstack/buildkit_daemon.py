"""Run a standalone buildkitd over TCP with mutual TLS, configured by the topology's rendered buildkitd.toml."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from release.adapters import process
from release.devstack.buildkit import BuildkitBinaries
from release.devstack.buildkit_certs import BuildkitCerts, TlsFiles, render_certs
from release.devstack.install import apt_install
from release.devstack.probes import port_listening
from release.devstack.processes import proc_start_time, read_pidfile
from release.errors import ConfigError, OperationError
from release.topology.buildkitd import render_buildkitd
from release.topology.model import Topology

Log = Callable[[str], None]
READY_TIMEOUT = 60.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The worker this buildkitd runs: one OCI worker (runc from the machine's own Debian suite) on overlayfs; RUN steps
# use the host's network namespace (on a cluster-shape host, that host's), so no CNI setup is needed.
WORKER_FLAGS = (
    "--oci-worker=true",
    "--containerd-worker=false",
    "--oci-worker-snapshotter=overlayfs",
    "--oci-worker-net=host",
)


@dataclass(frozen=True)
class BuildkitdLayout:
    """Where one buildkitd keeps its files: TLS material, config, state root, log and pidfile."""

    folder: Path

    @property
    def certs(self) -> Path:
        """Return the folder of the CA, server and client files."""
        return self.folder / "tls"

    @property
    def config(self) -> Path:
        """Return the rendered buildkitd.toml."""
        return self.folder / "buildkitd.toml"

    @property
    def root(self) -> Path:
        """Return buildkitd's --root (its cache and snapshots; kept between runs, so a restart stays warm)."""
        return self.folder / "root"

    @property
    def log(self) -> Path:
        """Return buildkitd's log file."""
        return self.folder / "buildkitd.log"

    @property
    def pidfile(self) -> Path:
        """Return the pidfile: pid and kernel start time."""
        return self.folder / "buildkitd.pid"


@dataclass(frozen=True)
class RunningBuildkitd:
    """A started buildkitd: how clients reach it and which files they need."""

    pid: int
    address: str
    server_name: str
    certs: BuildkitCerts
    layout: BuildkitdLayout
    buildctl: Path

    @property
    def client(self) -> TlsFiles:
        """Return the client side of the TLS files (for buildx and buildctl)."""
        return self.certs.client


def tcp_address(host: str, port: int) -> str:
    """Return buildkitd's listen address; refuse a port outside 1..65535 or an empty host."""
    if not host or not 0 < port < 65536:
        raise ConfigError(f"buildkitd address: host {host!r} port {port} is not a TCP endpoint")
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def buildkitd_argv(buildkitd: Path, address: str, server: TlsFiles, layout: BuildkitdLayout, runc: str) -> list[str]:
    """Return the buildkitd command line: TCP with mutual TLS (a CA makes client certificates required)."""
    return [
        str(buildkitd),
        "--addr", address,
        "--tlscacert", str(server.ca_cert),
        "--tlscert", str(server.cert),
        "--tlskey", str(server.key),
        "--root", str(layout.root),
        "--config", str(layout.config),
        *WORKER_FLAGS,
        f"--oci-worker-binary={runc}",
    ]  # fmt: skip


def buildctl_argv(
    buildctl: Path, address: str, client: TlsFiles | None, server_name: str, *args: str, ca_cert: Path | None = None
) -> list[str]:
    """Return a buildctl command line for the daemon, with the client's files (None: the CA only, no client cert)."""
    argv = [str(buildctl), "--addr", address, "--tlsservername", server_name]
    ca = client.ca_cert if client else ca_cert
    if ca is not None:
        argv += ["--tlscacert", str(ca)]
    if client is not None:
        argv += ["--tlscert", str(client.cert), "--tlskey", str(client.key)]
    return [*argv, *args]


def running_pid(layout: BuildkitdLayout) -> int | None:
    """Return the pid of the buildkitd this folder's pidfile records, if it still runs."""
    tracked = read_pidfile(layout.pidfile)
    return tracked.pid if tracked else None


def find_runc(log: Log) -> str:
    """Return the machine's runc (installing Debian's package when missing)."""
    found = shutil.which("runc", path=SYSTEM_PATH)
    if found is None:
        apt_install(("runc",), log)
        found = shutil.which("runc", path=SYSTEM_PATH)
    if found is None:
        raise OperationError("starting buildkitd: no runc on this machine. What to do: apt-get install runc")
    return found


def start_buildkitd(
    folder: Path,
    binaries: BuildkitBinaries,
    topology: Topology,
    *,
    host: str,
    port: int,
    server_names: Sequence[str],
    via: str = "service",
    log: Log,
    ready_timeout: float = READY_TIMEOUT,
    prefix: Sequence[str] = (),
) -> RunningBuildkitd:
    """Render certs and buildkitd.toml into `folder`, start buildkitd on host:port with mTLS, wait until it serves.

    `prefix` runs it elsewhere (a cluster-shape host: `ip netns exec NS …`); the prefix must exec buildkitd itself.
    """
    layout = BuildkitdLayout(folder)
    address = tcp_address(host, port)
    if running_pid(layout) is not None:
        raise OperationError(
            f"starting buildkitd in {folder}: one already runs there (pid {running_pid(layout)}). "
            "What to do: stop it first (stop_buildkitd) or use another folder."
        )
    if port_listening(port, host):
        raise OperationError(f"starting buildkitd on {host}:{port}: the port is taken. What to do: pick another port.")
    folder.mkdir(parents=True, exist_ok=True)
    layout.root.mkdir(parents=True, exist_ok=True)
    certs = render_certs(layout.certs, server_names)
    layout.config.write_text(render_buildkitd(topology, via))
    argv = [*prefix, *buildkitd_argv(binaries.buildkitd, address, certs.server, layout, find_runc(log))]
    with layout.log.open("ab") as out:
        out.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = process.start(argv, env={"PATH": SYSTEM_PATH}, stdout=out, stderr=subprocess.STDOUT, what="buildkitd")
    layout.pidfile.write_text(f"{proc.pid} {proc_start_time(proc.pid) or ''}\n")
    running = RunningBuildkitd(proc.pid, address, server_names[0], certs, layout, binaries.buildctl)
    log(f"devstack: buildkitd (pid {proc.pid}) on {address}, mutual TLS as {server_names[0]}")
    try:
        wait_ready(running, proc, ready_timeout)
    except BaseException:
        stop_buildkitd(folder)
        raise
    return running


def wait_ready(running: RunningBuildkitd, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until `buildctl debug workers` answers with the client certificate; raise with the log's tail if not."""
    argv = buildctl_argv(running.buildctl, running.address, running.client, running.server_name, "debug", "workers")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperationError(
                f"buildkitd exited with {proc.returncode} at start: {_log_tail(running.layout.log)}. "
                f"What to do: read {running.layout.log}."
            )
        result = process.run(argv, check=False, timeout=10.0)
        if result.returncode == 0:
            return
        last = process.tail(result.stderr, 1)
        time.sleep(0.3)
    raise OperationError(
        f"buildkitd on {running.address} did not answer within {timeout:g} s ({last or 'no answer'}). "
        f"What to do: read {running.layout.log}."
    )


def _log_tail(path: Path) -> str:
    """Return the last line of a log file, or ''."""
    try:
        return process.tail(path.read_text(errors="replace"), 1)
    except OSError:
        return ""


def stop_buildkitd(folder: Path, timeout: float = 15.0) -> int | None:
    """Stop the buildkitd recorded in `folder` (its whole process group), unmount what it left; return its pid."""
    from release.devstack.stack import unmount_under

    layout = BuildkitdLayout(folder)
    pid = running_pid(layout)
    if pid is not None and not process.stop_group(pid, timeout):
        raise OperationError(
            f"stopping buildkitd (pid {pid}): still running after SIGKILL. What to do: check `ps -p {pid}`."
        )
    layout.pidfile.unlink(missing_ok=True)
    unmount_under(layout.root)
    return pid
