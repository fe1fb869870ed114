"""Where the devstack keeps its state: one directory outside the repository, and the files in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR_NAME = "fractalops-devstack"


def default_state_dir(configured: Path | None, state_home: Path) -> Path:
    """The state dir: `configured` (FRACTALOPS_DEVSTACK_DIR), else `<state_home>/fractalops-devstack`."""
    if configured is not None and str(configured).strip():
        return configured.expanduser().absolute()
    return (state_home / STATE_DIR_NAME).expanduser().absolute()


@dataclass(frozen=True)
class StackPaths:
    """Every path the devstack reads or writes, derived from one state directory."""

    root: Path

    @property
    def prefix(self) -> Path:
        """Return the prefix into which downloaded engine packages are unpacked."""
        return self.root / "prefix"

    @property
    def apt_dir(self) -> Path:
        """Return the private apt directory (sources list, lists, cache) for the engine suite."""
        return self.root / "apt"

    @property
    def downloads(self) -> Path:
        """Return the directory holding downloaded .deb files."""
        return self.root / "apt" / "debs"

    @property
    def install_marker(self) -> Path:
        """Return the file that records a finished install (package versions, binary paths)."""
        return self.root / "installed.json"

    @property
    def bin_dir(self) -> Path:
        """Return the directory put first on PATH; it holds the `docker` client link."""
        return self.root / "bin"

    @property
    def docker_config(self) -> Path:
        """Return the DOCKER_CONFIG directory of the stack, so ~/.docker stays untouched."""
        return self.root / "docker-config"

    @property
    def etc(self) -> Path:
        """Return the directory of rendered configuration files."""
        return self.root / "etc"

    @property
    def run(self) -> Path:
        """Return the directory of pidfiles and sockets."""
        return self.root / "run"

    @property
    def logs(self) -> Path:
        """Return the directory of process logs."""
        return self.root / "logs"

    @property
    def docker_socket(self) -> Path:
        """Return the engine's unix socket."""
        return self.run / "docker.sock"

    @property
    def containerd_socket(self) -> Path:
        """Return the stack's own containerd socket."""
        return self.run / "containerd.sock"

    @property
    def docker_data_root(self) -> Path:
        """Return the engine's data root."""
        return self.root / "docker"

    @property
    def docker_exec_root(self) -> Path:
        """Return the engine's exec root (kept short: it holds unix sockets)."""
        return self.run / "dx"

    @property
    def containerd_root(self) -> Path:
        """Return containerd's persistent root."""
        return self.root / "containerd"

    @property
    def containerd_state(self) -> Path:
        """Return containerd's state dir (kept short: it holds unix sockets)."""
        return self.run / "cd"

    @property
    def registry_data(self) -> Path:
        """Return the parent directory of the registries' storage."""
        return self.root / "registries"

    @property
    def seed_context(self) -> Path:
        """Return the build context of the offline base image."""
        return self.root / "seed"

    @property
    def topology(self) -> Path:
        """Return the topology file written for this stack."""
        return self.root / "topology.yaml"

    @property
    def env_file(self) -> Path:
        """Return the file holding the export lines of the stack."""
        return self.root / "env.sh"

    def pidfile(self, component: str) -> Path:
        """Return the pidfile of a component."""
        return self.run / f"{component}.pid"

    def logfile(self, component: str) -> Path:
        """Return the log file of a component."""
        return self.logs / f"{component}.log"

    def config_file(self, name: str) -> Path:
        """Return a rendered configuration file."""
        return self.etc / name
