"""`runtime`: build and push the api and worker images, print their image_refs, promote them when asked."""

from __future__ import annotations

import os
from pathlib import Path

import click

from release.cli.app import App, SettingsCommand, pass_app, targets_file_option


@click.command("runtime", cls=SettingsCommand)
@click.option("--target", "targets", multiple=True, help="Build only this target (repeatable): api, worker.")
@click.option("--builder", help="buildx builder (FRACTALOPS_BUILDER; default: the current one).")
@click.option("--platform", "platforms", multiple=True, help="Target platform, passed to buildx (repeatable).")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON document instead of image_ref lines.")
@click.option("--dry-run", is_flag=True, help="Print the plan (targets, tags, cache flags) and build nothing.")
@click.option(
    "--allow-local/--no-allow-local",
    default=None,
    help="Allow a release outside CI (FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE).",
)
@click.option(
    "--update-gitops/--no-update-gitops",
    default=None,
    help="Promote into the values files (FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS; default off).",
)
@click.option("--no-cache", "no_cache", is_flag=True, help="Build without the registry cache.")
@click.option(
    "--progress",
    type=click.Choice(["auto", "plain", "tty"]),
    default=None,
    help="plain: numbered lines (CI); tty: a live line per target; auto (default): tty at a terminal outside CI.",
)
@click.option(
    "--reuse",
    type=click.Choice(["promote", "always", "never"]),
    default=None,
    help="Take the image at a target's tag when its inputs are unchanged: promote (default), always, never.",
)
@targets_file_option
@click.option(
    "--events-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSONL file for Build Plane Events (FRACTALOPS_BUILD_EVENTS_FILE).",
)
@click.option("--force", is_flag=True, help="Override the compare-and-swap and monotonic GitOps guards.")
@pass_app
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
    progress: str | None,
    reuse: str | None,
    targets_file: Path | None,
    events_file: Path | None,
    force: bool,
) -> int:
    """Build and push the api and worker images; print one image_ref line per target."""
    engine = None
    if not dry_run:  # the engine answers its preflight questions while the settings and the inputs load
        from release.adapters.buildx import Buildx

        engine = Buildx()
        engine.ask(builder or (os.environ if app.environ is None else app.environ).get("FRACTALOPS_BUILDER") or None)
    loaded = app.load(
        builder=builder,
        platform=platforms or None,
        progress=progress,
        reuse=reuse,
        targets=targets_file,
        build_events_file=events_file,
        allow_local_runtime_release=allow_local,
        runtime_release_update_gitops=update_gitops,
    )
    from release.build.inputs import ReleaseRequest

    request = ReleaseRequest(
        targets=targets, json_output=json_output, dry_run=dry_run, use_cache=not no_cache, force=force
    )
    from release.build.pipeline import run_release
    from release.build.report import Streams

    return run_release(request, loaded, Streams(), engine)
