"""The release plan's cache scopes: one per branch, and only `main` writes main's cache."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from release.build.cache import cache_scope


def test_only_main_writes_the_main_cache() -> None:
    # Names that slug to `main` (Main, MAIN, main/) get their own scope.
    assert cache_scope("main") == "main"
    assert {cache_scope(b) for b in ("Main", "MAIN", "main/", "m a i n")}.isdisjoint({"main"})


def test_branches_that_slug_alike_do_not_share_a_scope() -> None:
    # feature/x, Feature/X and feature-x are three caches.
    assert len({cache_scope(b) for b in ("feature/x", "Feature/X", "feature-x")}) == 3


@given(st.text(min_size=1, max_size=120), st.text(min_size=1, max_size=120))
def test_scopes_are_tag_safe_and_distinct(a: str, b: str) -> None:
    # Every branch name gives a valid tag component (with the target prefix, at most 128 characters); distinct names differ.
    for scope in (cache_scope(a), cache_scope(b)):
        assert scope and len(f"worker-{scope}") <= 128
        assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in scope) and (
            scope[0].isalnum() or scope[0] == "_"
        )
    if a != b:
        assert cache_scope(a) != cache_scope(b)
