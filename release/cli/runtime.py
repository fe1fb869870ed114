"""`runtime`: build and push the api and worker images, print their image_refs, promote them when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from release.cli.app import App, SettingsCommand, pass_app, targets_file_option

if TYPE_CHECKING:
    from release.settings import Loaded


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
    targets_file: Path | None,
    events_file: Path | None,
    force: bool,
) -> int:
    """Build and push the api and worker images; print one image_ref line per target."""
    loaded = app.load(
        builder=builder,
        platform=platforms or None,
        progress=progress,
        targets=targets_file,
        build_events_file=events_file,
        allow_local_runtime_release=allow_local,
        runtime_release_update_gitops=update_gitops,
    )
    request = ReleaseRequest(
        targets=targets, json_output=json_output, dry_run=dry_run, use_cache=not no_cache, force=force
    )
    return run_release(request, loaded, _streams())


# --- MERGE: remove from here to the end once release.build is merged, and import instead: ----------------------------
#   from release.build.inputs import ReleaseRequest
#   from release.build.pipeline import run_release
#   from release.build.report import Streams   (or release.streams, where the build half put it)
# A thin adapter onto today's release.driver.run_release, so this branch stays green until then.


@dataclass(frozen=True)
class ReleaseRequest:
    """What only the command line says (stand-in for release.build.inputs.ReleaseRequest)."""

    targets: tuple[str, ...] = ()
    json_output: bool = False
    dry_run: bool = False
    use_cache: bool = True
    force: bool = False


def _streams() -> Any:
    """The release's output streams (stand-in for release.build.report.Streams())."""
    from release.driver import Streams

    return Streams()


def run_release(request: ReleaseRequest, loaded: Loaded, streams: Any) -> int:
    """Map onto the driver: settings given by flag go in as options; the driver reads the rest from the environment."""
    import os

    from release.driver import ReleaseOptions
    from release.driver import run_release as drive

    settings, flagged = loaded.settings, {name for name, source in loaded.sources.items() if source == "flag"}
    options = ReleaseOptions(
        targets=request.targets,
        builder=settings.builder if "builder" in flagged else None,
        platforms=settings.platform if "platform" in flagged else (),
        json_output=request.json_output,
        dry_run=request.dry_run,
        allow_local=settings.allow_local_runtime_release if "allow_local_runtime_release" in flagged else None,
        update_gitops=settings.runtime_release_update_gitops if "runtime_release_update_gitops" in flagged else None,
        use_cache=request.use_cache,
        progress=settings.progress,
        topology_path=loaded.topology_file,
        targets_path=loaded.targets_file,
        events_file=settings.build_events_file if "build_events_file" in flagged else None,
        force=request.force,
    )
    return drive(options, dict(os.environ), streams)
