"""TEMPORARY re-export for release/cli.py's `promote`; delete at the merge (use release.github.append_image_refs)."""

from release.github import append_image_refs as write_github_image_refs

__all__ = ["write_github_image_refs"]
