"""The `promote` command, click-free: parse `target=image_ref` pairs, promote, print, record, write $GITHUB_OUTPUT."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from release.errors import ConfigError
from release.gitops.promote import Policy, RegistryFactory, promote
from release.gitops.record import append_record, build_record

if TYPE_CHECKING:
    from release.settings import Loaded


@dataclass(frozen=True)
class PromoteRequest:
    """What only the command line says: the pairs and the switches of this one promotion."""

    pairs: tuple[str, ...]
    dry_run: bool = False
    force: bool = False
    json_output: bool = False
    policy: Policy = "strict"
    source_repo: Path | None = None
    push: bool = True


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


def _check_github_output(loaded: Loaded) -> Path | None:
    """$GITHUB_OUTPUT, checked before anything is pushed (a file that cannot be appended to would lose the refs)."""
    from release.github import check_appendable

    path = loaded.context.github_output
    if path is not None:
        check_appendable("GITHUB_OUTPUT", path)
    return path


def run_promote(
    request: PromoteRequest,
    loaded: Loaded,
    *,
    repo_root: Path | None = None,
    registry_client_factory: RegistryFactory | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Promote the request's pairs with the loaded settings; 0 on success (a ReleaseError carries the exit code).

    `repo_root` overrides the settings' repository (FRACTALOPS_REPO_ROOT, else the checkout around the working
    directory). A promotion that lands appends its record to the settings' record file and, in GitHub Actions,
    `image_ref_<target>=…` lines to $GITHUB_OUTPUT.
    """
    from release.adapters.git import GitRepo
    from release.targets import load_targets
    from release.topology import load_topology

    images = parse_pairs(list(request.pairs))
    github_output = None if request.dry_run else _check_github_output(loaded)
    settings = loaded.settings
    root = repo_root or loaded.repo_root or GitRepo(Path.cwd()).root
    result = promote(
        images,
        repo_root=root,
        topology=load_topology(loaded.topology_file),
        targets=load_targets(settings.targets) if settings.targets else None,
        remote=settings.gitops_remote,
        branch=settings.gitops_branch,
        author=settings.gitops_author,
        push_attempts=settings.gitops_push_attempts,
        push_backoff=settings.gitops_push_backoff,
        policy=request.policy,
        force=request.force,
        dry_run=request.dry_run,
        push=request.push,
        source_repo=request.source_repo,
        registry_client_factory=registry_client_factory,
        docker_config=loaded.context.docker_config_dir,
    )
    record = build_record(result)
    if request.dry_run:
        if request.json_output:
            out.write(json.dumps({**record, "plan": result.plan.as_dict()}, indent=2) + "\n")
        else:
            out.write(result.plan.render())
        return 0
    written = append_record(record, loaded.record_file)
    if result.noop:
        err.write("promote: every target already pins its image; nothing committed\n")
    else:
        where = f"pushed to {result.remote}/{result.branch}" if result.pushed else "committed locally (not pushed)"
        err.write(f"promote: {result.commit} {where} after {result.retries} retries; record in {written}\n")
    if request.json_output:
        out.write(json.dumps(record, indent=2) + "\n")
    if github_output is not None:
        from release.github import append_image_refs

        append_image_refs(github_output, images)
    return 0
