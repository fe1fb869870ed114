"""Every setting the toolkit reads, one field each: built once from flags and the environment, then passed down."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from release.errors import ConfigError, UsageError

Source = Literal["flag", "environment", "default"]
PREFIX = "FRACTALOPS_"
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def _setting(
    default: Any, help: str, *, commands: tuple[str, ...], env: str | None = None, secret: bool = False
) -> Any:
    """A field with its description, the commands that read it, its variable (default FRACTALOPS_<NAME>)."""
    return Field(
        default, description=help, json_schema_extra={"commands": list(commands), "env": env, "secret": secret}
    )


# The commands that read each group of settings (`--help` of each lists them).
RELEASE = ("runtime",)
PROMOTE = ("runtime", "promote")
TOPOLOGY_COMMANDS = (
    "topology check",
    "topology render-env",
    "topology render-registries",
    "topology render-buildkitd",
    "topology show",
)
REPOSITORY = ("runtime", "promote", *TOPOLOGY_COMMANDS, "builder create")
VIA = ("runtime", "topology render-env", "topology render-buildkitd", "builder create")
DEVSTACK = ("devstack up", "devstack down", "devstack status")
DEVSTACK_HOSTS = ("devstack exec", "devstack link")


class Settings(BaseModel):
    """The toolkit's settings: flag > environment > default, validated once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_local_runtime_release: bool = _setting(
        False,
        "`1` allows a release outside CI (neither `CI` nor `GITHUB_ACTIONS` set); `--allow-local`.",
        commands=RELEASE,
    )
    runtime_release_update_gitops: bool = _setting(
        False,
        "`0`/`false`/`no` (the default) smoke build, GitOps untouched; `1`/`true`/`yes` the final promotion updates "
        "both values files in one commit; anything else is a usage error; `--update-gitops`.",
        commands=RELEASE,
    )
    repo_root: Path | None = _setting(
        None,
        "repository root (release.sh sets it to its own checkout; default: found from the working directory).",
        commands=REPOSITORY,
    )
    topology: Path | None = _setting(
        None, "topology file (default `ops/topology/fractalops.yaml`); `--topology`.", commands=REPOSITORY
    )
    targets: Path | None = _setting(
        None,
        "release targets file: what is built and which values keys pin each image (default "
        "`ops/containers/fractalops/targets.yaml`); `--targets-file`.",
        commands=PROMOTE,
    )
    builder: str | None = _setting(None, "buildx builder (default: the current one); `--builder`.", commands=RELEASE)
    platform: tuple[str, ...] = _setting(
        (), "target platform(s), comma-separated, passed to buildx; `--platform`.", commands=RELEASE
    )
    source_commit: str | None = _setting(
        None, "source commit of the build (default `GITHUB_SHA`, else HEAD of the repository).", commands=RELEASE
    )
    cache_branch: str | None = _setting(
        None,
        "cache scope (default `GITHUB_HEAD_REF`/`GITHUB_REF_NAME`, else `main`); a branch writes "
        "`<target>-<branch slug>` (a short hash is added when the slug differs from the name, so no branch can "
        "write `main`'s cache) and also reads `<target>-main`.",
        commands=RELEASE,
    )
    cache_deadline: float = _setting(
        120.0,
        "seconds a cache import/export step may go without progress (no BuildKit status, no bytes to or from the "
        "cache host at FRACTALOPS_CACHE_MIN_RATE) before it is stopped (default 120); a step that keeps moving is "
        "never stopped.",
        commands=RELEASE,
    )
    cache_min_rate: float = _setting(
        500_000.0,
        "the slowest a cache step's bytes may move and still count as progress, in bytes per second on average "
        "(`500KB/s`, `2MB/s`, `64KiB/s` or a plain number; default 500KB/s; `0`: any byte counts): a step whose "
        "bytes crawl below it, with no BuildKit status, is stopped at FRACTALOPS_CACHE_DEADLINE like a silent one.",
        commands=RELEASE,
    )
    build_order: Literal["sequential", "parallel"] = _setting(
        "sequential",
        "`sequential` (default): targets build one after another, the next starting once the one before has "
        "exported its cache (its push and digest check overlap the next build's start); `parallel`: side by side. "
        "BuildKit can leave a step out of one target's cache export, or miss it on import, when targets that share "
        "a stage build at once (moby/buildkit#4674, docker/buildx#414): the next runner then rebuilds it.",
        commands=RELEASE,
    )
    reuse: Literal["promote", "always", "never"] = _setting(
        "promote",
        "when a release skips the build of a target whose inputs (context files, Dockerfile, build arguments, "
        "labels, platforms and the digests its base images resolve to through the mirror) equal those of the image "
        "already at its tag, and takes that image: `promote` (default): a promotion reuses the image a smoke build "
        "of the same commit pushed, so the digest promoted is the one that was tested; `always`: smoke builds too; "
        "`never`: every release builds; `--reuse`.",
        commands=RELEASE,
    )
    cache_unavailable_warn_after: int = _setting(
        3,
        "a target whose build found the cache unavailable this many releases in a row (counted in the build events "
        "file, so it must outlive the runner) gets a warning, a `::warning::` annotation in GitHub Actions and a "
        "line in the step summary (default 3, at least 1).",
        commands=RELEASE,
    )
    progress: Literal["auto", "plain", "tty"] = _setting(
        "auto",
        "`auto` (default: tty at a terminal outside CI), `plain` or `tty`; `--progress`.",
        commands=RELEASE,
    )
    build_events_file: Path | None = _setting(
        None,
        "JSONL file Build Plane Events are appended to (default "
        "`~/.local/state/fractalops-release/build-events.jsonl`); `--events-file`.",
        commands=("runtime", "promote", "events summary"),
    )
    build_events_url: SecretStr | None = _setting(
        None,
        "optional HTTP sink Build Plane Events are POSTed to (`user:password@` in the URL sent as Basic auth, with "
        "`/ ? # @` in them percent-encoded; a redirect is never followed and counts as a failed delivery, with a "
        "warning).",
        commands=RELEASE,
        secret=True,
    )
    events_dir: Path | None = _setting(
        None,
        "folder of the release records, `releases.jsonl` (default: beside the build events).",
        commands=PROMOTE,
    )
    gitops_author: str | None = _setting(
        None,
        "author of GitOps commits (`Name <email>`, no control characters, default "
        "`fractalops-release <release@fractalops.invalid>`).",
        commands=PROMOTE,
    )
    gitops_remote: str = _setting(
        "origin", "remote GitOps commits are pushed to (default `origin`); `--remote`.", commands=PROMOTE
    )
    gitops_branch: str = _setting(
        "main", "branch GitOps commits are pushed to (default `main`); `--branch`.", commands=PROMOTE
    )
    gitops_push_attempts: int = _setting(
        8, "push attempts when the remote moved (default 8, at most 100).", commands=PROMOTE
    )
    gitops_push_backoff: float = _setting(
        0.2, "first backoff between push attempts in seconds (default 0.2, growing, jittered).", commands=PROMOTE
    )
    nexus_via: Literal["service", "clusterip"] = _setting(
        "service",
        "`service` (default) or `clusterip`: how builders reach Nexus (its DNS name, or its ClusterIP for builders "
        "that cannot resolve cluster DNS); `--via`.",
        commands=VIA,
    )
    nexus_pull_password: SecretStr | None = _setting(
        None,
        "the K3s nodes' pull password (`shim-puller`), from OpenBao's runtime scope; never printed.",
        commands=("topology render-registries",),
        secret=True,
    )
    devstack_dir: Path | None = _setting(
        None,
        "state folder of the local build stack (default `~/.local/state/fractalops-devstack`).",
        commands=(*DEVSTACK, *DEVSTACK_HOSTS),
    )
    devstack_port_base: int | None = _setting(
        None,
        "first of a new local build stack's four loopback ports (default 35080); `down` and `status` use the "
        "ports the stack recorded.",
        commands=DEVSTACK,
    )
    test_crash_at: Literal["between-writes", "before-commit", "after-commit"] | None = _setting(
        None,
        "test hook (crash tests only): the GitOps writer kills itself with SIGKILL at this point "
        "(`between-writes`, `before-commit`, `after-commit`).",
        commands=PROMOTE,
    )

    @field_validator("cache_deadline")
    @classmethod
    def _deadline(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 < value <= 86400):
            raise ValueError("want seconds, more than 0 and at most 86400")
        return value

    @field_validator("cache_min_rate", mode="before")
    @classmethod
    def _rate(cls, value: object) -> float:
        rate = parse_rate(value) if isinstance(value, str) else value
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not (math.isfinite(rate) and rate >= 0):
            raise ValueError(
                "want bytes per second: a number with an optional unit (500KB/s, 2MB/s, 64KiB/s), 0 or more"
            )
        return float(rate)

    @field_validator("cache_unavailable_warn_after")
    @classmethod
    def _streak(cls, value: int) -> int:
        if not 1 <= value <= 10000:
            raise ValueError("want a whole number from 1 to 10000")
        return value

    @field_validator("gitops_push_attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if not 1 <= value <= 100:
            raise ValueError("want a whole number from 1 to 100")
        return value

    @field_validator("gitops_push_backoff")
    @classmethod
    def _backoff(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 <= value <= 60):
            raise ValueError("want seconds from 0 to 60")
        return value

    @field_validator("gitops_author")
    @classmethod
    def _author(cls, value: str | None) -> str | None:
        from release.adapters.git import author_problem

        problem = author_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("topology", "targets", "build_events_file")
    @classmethod
    def _file(cls, value: Path | None) -> Path | None:
        if value is not None and value.is_dir():
            raise ValueError("is a folder, not a file")
        return value

    @field_validator("builder", "cache_branch", "gitops_remote", "gitops_branch")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError("holds a control character")
        return value


@dataclass(frozen=True)
class Context:
    """What the CI system and the machine say (not the toolkit's own settings): read once, beside Settings."""

    ci: bool = False
    github_actions: bool = False
    github_output: Path | None = None
    github_step_summary: Path | None = None
    github_env: Path | None = None
    github_run_id: str | None = None
    github_sha: str | None = None
    github_ref_name: str | None = None
    github_head_ref: str | None = None
    github_server_url: str | None = None
    github_repository: str | None = None
    docker_config: Path | None = None
    docker_host: str | None = None
    home: Path | None = None
    xdg_state_home: Path | None = None
    term: str | None = None

    @property
    def in_ci(self) -> bool:
        """True under a CI system (CI or GITHUB_ACTIONS set to a true value)."""
        return self.ci or self.github_actions

    @property
    def state_home(self) -> Path:
        """The user's state folder: $XDG_STATE_HOME, else ~/.local/state."""
        return self.xdg_state_home or (self.home or Path.home()) / ".local" / "state"

    @property
    def docker_config_dir(self) -> Path:
        """The docker CLI's config folder: $DOCKER_CONFIG, else ~/.docker."""
        return self.docker_config or (self.home or Path.home()) / ".docker"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Context:
        """Read the CI and machine variables (empty means unset)."""

        def text(name: str) -> str | None:
            return environ.get(name) or None

        def path(name: str) -> Path | None:
            value = text(name)
            return Path(value) if value else None

        return cls(
            ci=(environ.get("CI", "").strip().lower() in _TRUE),
            github_actions=(environ.get("GITHUB_ACTIONS", "").strip().lower() in _TRUE),
            github_output=path("GITHUB_OUTPUT"),
            github_step_summary=path("GITHUB_STEP_SUMMARY"),
            github_env=path("GITHUB_ENV"),
            github_run_id=text("GITHUB_RUN_ID"),
            github_sha=text("GITHUB_SHA"),
            github_ref_name=text("GITHUB_REF_NAME"),
            github_head_ref=text("GITHUB_HEAD_REF"),
            github_server_url=text("GITHUB_SERVER_URL"),
            github_repository=text("GITHUB_REPOSITORY"),
            docker_config=path("DOCKER_CONFIG"),
            docker_host=text("DOCKER_HOST"),
            home=path("HOME"),
            xdg_state_home=path("XDG_STATE_HOME"),
            term=text("TERM"),
        )


_RATE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmg]i?)?b?(?:/s)?", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_rate(text: str) -> float | None:
    """Bytes per second from `500KB/s`, `2MB/s`, `64KiB/s`, `1000` (k, M, G are powers of 1000); None if not one."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        return None
    return float(match.group("number")) * _RATE_UNITS[(match.group("unit") or "").lower()]


def variable(name: str) -> str:
    """The environment variable of a setting."""
    extra = Settings.model_fields[name].json_schema_extra
    explicit = extra.get("env") if isinstance(extra, dict) else None
    return str(explicit) if explicit else PREFIX + name.upper()


def _extra(name: str) -> dict[str, Any]:
    extra = Settings.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def is_secret(name: str) -> bool:
    """Whether a setting holds a secret (never printed)."""
    return bool(_extra(name).get("secret"))


def read_by(command: str) -> list[str]:
    """The settings a command reads, in declaration order."""
    return [name for name in Settings.model_fields if command in _extra(name).get("commands", [])]


def _from_text(name: str, text: str) -> Any:
    """An environment value as the field wants it: switches, comma lists, numbers; pydantic checks the rest."""
    annotation = Settings.model_fields[name].annotation
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise UsageError(f"{variable(name)}={text!r}: want one of 0, 1, true, false, yes, no")
    if name == "platform":
        return tuple(part.strip() for part in text.split(","))
    return text.strip() if annotation in (float, int, int | None) else text


@dataclass(frozen=True)
class Loaded:
    """Settings with the source of each value, and the CI context."""

    settings: Settings
    sources: dict[str, Source]
    context: Context

    @property
    def events_file(self) -> Path:
        """Where Build Plane Events go: FRACTALOPS_BUILD_EVENTS_FILE, else the user's state folder."""
        return self.settings.build_events_file or self.context.state_home / "fractalops-release" / "build-events.jsonl"

    @property
    def record_file(self) -> Path:
        """Where release records go: FRACTALOPS_EVENTS_DIR/releases.jsonl, else beside the build events."""
        folder = self.settings.events_dir or self.events_file.parent
        return folder / "releases.jsonl"

    @property
    def builders_dir(self) -> Path:
        """Where `builder create` keeps each builder's rendered buildkitd.toml."""
        return self.context.state_home / "fractalops-release" / "builders"

    @property
    def repo_root(self) -> Path | None:
        """FRACTALOPS_REPO_ROOT (checked), else the checkout around the working directory; None outside one."""
        from release.topology.load import repo_root

        return repo_root(explicit=self.settings.repo_root)

    @property
    def topology_file(self) -> Path:
        """FRACTALOPS_TOPOLOGY / --topology, else the repository's ops/topology/fractalops.yaml."""
        from release.topology.load import default_topology_path

        return self.settings.topology or default_topology_path(self.repo_root)

    @property
    def targets_file(self) -> Path:
        """FRACTALOPS_TARGETS / --targets-file, else the repository's ops/containers/fractalops/targets.yaml."""
        from release.targets import RELATIVE_PATH

        if self.settings.targets is not None:
            return self.settings.targets
        root = self.repo_root
        if root is None:
            raise ConfigError(f"no repository root found (looked for the topology file); cannot find {RELATIVE_PATH}")
        return root / RELATIVE_PATH


def load(environ: Mapping[str, str], flags: Mapping[str, Any] | None = None, *, command: str | None = None) -> Loaded:
    """Build the settings: a flag that was given, else the environment variable when set and non-empty, else the default.

    A bad value is a one-line UsageError naming the flag or the variable. With `command` (e.g. "topology check"),
    only the settings that command reads must be valid: a bad value of another one leaves that setting at its
    default (source "default"), so a variable meant for another command cannot stop this one.
    """
    wanted = set(read_by(command)) if command is not None else set(Settings.model_fields)
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name in Settings.model_fields:
        given = (flags or {}).get(name)
        sources[name] = "default"
        try:
            if given is not None and given != ():
                values[name], sources[name] = given, "flag"
            elif environ.get(variable(name), "") != "":
                values[name], sources[name] = _from_text(name, environ[variable(name)]), "environment"
        except UsageError:
            if name in wanted:
                raise
            values.pop(name, None)
            sources[name] = "default"
    while True:
        try:
            settings = Settings(**values)
        except ValidationError as err:
            names = [str(problem["loc"][0]) if problem["loc"] else "?" for problem in err.errors()]
            for problem, name in zip(err.errors(), names, strict=True):
                if name in wanted or name not in values:
                    raise _usage_error(problem, name, values, sources) from None
            for name in names:  # settings this command does not read: their defaults stand
                values.pop(name, None)
                sources[name] = "default"
            continue
        return Loaded(settings, sources, Context.from_environ(environ))


def _usage_error(problem: Any, name: str, values: dict[str, Any], sources: dict[str, Source]) -> UsageError:
    """One line: the flag or variable, the value (masked for a secret) and what is wrong with it."""
    shown = "***" if name in Settings.model_fields and is_secret(name) else repr(_shorten(str(values.get(name, ""))))
    where = f"--{name.replace('_', '-')}" if sources.get(name) == "flag" else variable(name)
    reason = _REASONS.get(problem["type"]) or str(problem["msg"]).removeprefix("Value error, ")
    if problem["type"] == "literal_error":
        reason = f"want one of {(problem.get('ctx') or {}).get('expected', '?')}"
    return UsageError(f"{where}={shown}: {reason}")


# pydantic's words for a value that does not parse, in the project's words.
_REASONS = {"int_parsing": "want a whole number", "float_parsing": "want a number", "bool_parsing": "want 0 or 1"}


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def describe(loaded: Loaded) -> list[tuple[str, str, str]]:
    """(variable, value as shown, source) for every setting; secrets masked, unset values empty."""
    rows: list[tuple[str, str, str]] = []
    for name in Settings.model_fields:
        value = getattr(loaded.settings, name)
        if value is None or value == ():
            shown = ""
        elif is_secret(name):
            shown = "***"
        elif isinstance(value, tuple):
            shown = ",".join(value)
        elif isinstance(value, bool):
            shown = "1" if value else "0"
        else:
            shown = str(value)
        rows.append((variable(name), shown, loaded.sources[name]))
    return rows


def markdown_table() -> str:
    """The README's variable table, from the same descriptions `--help` shows."""
    lines = ["| variable | meaning |", "| --- | --- |"]
    for name, field in Settings.model_fields.items():
        lines.append(f"| `{variable(name)}` | {field.description} |")
    return "\n".join(lines) + "\n"
