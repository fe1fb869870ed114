"""The `promote` command, click-free: parse `target=image_ref` pairs, promote, print, record."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from release.errors import ConfigError
from release.gitops.promote import Policy, RegistryFactory, promote
from release.gitops.record import append_record, build_record


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """`["api=<ref>", "worker=<ref>"]` → `{"api": "<ref>", ...}`; a bad or repeated pair is a ConfigError."""
    from release.yamlfile import shown

    images: dict[str, str] = {}
    for pair in pairs:
        raw, sep, ref = pair.partition("=")
        name = raw.strip()  # " api" is api: whitespace around a name never makes another target
        if not sep or not name or not ref.strip():
            raise ConfigError(
                f"{shown(pair)}: want target=image_ref (e.g. api=ghcr.io/yamonco/fractalops-api@sha256:…)"
            )
        if not name.isprintable() or any(c.isspace() for c in name):
            raise ConfigError(f"{shown(pair)}: the target name {shown(name)} holds whitespace or a control character")
        if name in images:
            raise ConfigError(f"{shown(pair)}: target {name!r} given twice")
        images[name] = ref.strip()
    if not images:
        raise ConfigError("nothing to promote: give at least one target=image_ref")
    return images


def _default_root() -> Path:
    from release.gitops.git import GitRepo
    from release.topology.load import repo_root

    return repo_root() or GitRepo(Path.cwd()).root


def run_promote(
    pairs: list[str],
    *,
    dry_run: bool = False,
    force: bool = False,
    json_output: bool = False,
    remote: str = "origin",
    branch: str = "main",
    source_repo: Path | str | None = None,
    repo_root: Path | str | None = None,
    topology_path: Path | str | None = None,
    targets_path: Path | str | None = None,
    record_path: Path | str | None = None,
    policy: Policy = "strict",
    push: bool = True,
    registry_client_factory: RegistryFactory | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Promote `target=image_ref` pairs; 0 on success (a ReleaseError carries the exit code otherwise)."""
    from release.targets import load_targets
    from release.topology import load_topology

    images = parse_pairs(pairs)
    root = Path(repo_root) if repo_root else _default_root()
    topology = load_topology(topology_path)
    targets = load_targets(targets_path) if targets_path else None
    result = promote(
        images,
        repo_root=root,
        dry_run=dry_run,
        force=force,
        policy=policy,
        remote=remote,
        branch=branch,
        push=push,
        topology=topology,
        targets=targets,
        source_repo=source_repo,
        registry_client_factory=registry_client_factory,
    )
    record = build_record(result)
    if dry_run:
        if json_output:
            out.write(json.dumps({**record, "plan": result.plan.as_dict()}, indent=2) + "\n")
        else:
            out.write(result.plan.render())
        return 0
    written = append_record(record, record_path)
    if result.noop:
        err.write("promote: every target already pins its image; nothing committed\n")
    else:
        where = f"pushed to {remote}/{branch}" if result.pushed else "committed locally (not pushed)"
        err.write(f"promote: {result.commit} {where} after {result.retries} retries; record in {written}\n")
    if json_output:
        out.write(json.dumps(record, indent=2) + "\n")
    return 0
