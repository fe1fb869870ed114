"""TEMPORARY re-exports for modules of the CLI half that still import `release.plan`; delete at the merge.

Labels live in release.labels, cache refs in release.build.cache.
"""

from release.build.cache import cache_probe_target, cache_refs, cache_scope
from release.labels import DIRTY_LABEL, REVISION_LABEL, SOURCE_LABEL

__all__ = ["DIRTY_LABEL", "REVISION_LABEL", "SOURCE_LABEL", "cache_probe_target", "cache_refs", "cache_scope"]
