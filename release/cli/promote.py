"""`promote`: pin already-built images in the GitOps values files (one commit, pushed)."""

from __future__ import annotations

from pathlib import Path

import click

from release.cli.app import App, SettingsCommand, pass_app, targets_file_option


@click.command("promote", cls=SettingsCommand)
@click.argument("pairs", nargs=-1, required=True, metavar="TARGET=IMAGE_REF...")
@click.option("--dry-run", is_flag=True, help="Print the unified diff it would commit; change nothing.")
@click.option("--force", is_flag=True, help="Override compare-and-swap and monotonic refusals (rollbacks).")
@click.option("--json", "json_output", is_flag=True, help="Print the release record as JSON.")
@click.option("--remote", help="Remote the GitOps commit is pushed to (FRACTALOPS_GITOPS_REMOTE; default origin).")
@click.option("--branch", help="Branch the GitOps commit is pushed to (FRACTALOPS_GITOPS_BRANCH; default main).")
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
def promote(
    app: App,
    pairs: tuple[str, ...],
    dry_run: bool,
    force: bool,
    json_output: bool,
    remote: str | None,
    branch: str | None,
    policy: str,
    source_repo: Path | None,
    targets_file: Path | None,
) -> int:
    """Pin already-built images (api=<repo>@sha256:… worker=…) in the values files: one commit, pushed."""
    from release.gitops.commands import PromoteRequest, run_promote

    loaded = app.load(targets=targets_file, gitops_remote=remote, gitops_branch=branch)
    request = PromoteRequest(
        pairs, dry_run, force, json_output, "monotonic" if policy == "monotonic" else "strict", source_repo
    )
    return run_promote(request, loaded)
