"""What the Nexus cache plane retired, read from the packaged `retired.yaml`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

RETIRED_FILE = Path(__file__).with_name("retired.yaml")


@dataclass(frozen=True)
class RetiredPattern:
    """A pattern for something the design note retired, and why."""

    regex: re.Pattern[str]
    why: str


@dataclass(frozen=True)
class Retired:
    """The retired standalone cache and the patterns of retired practices."""

    folded_on: str
    addresses: tuple[str, ...]
    names: tuple[str, ...]
    keys: frozenset[str]
    patterns: tuple[RetiredPattern, ...]

    @property
    def folded_message(self) -> str:
        """The sentence every standalone-cache error ends with."""
        return (
            f"the standalone registry cache was folded into Nexus on {self.folded_on}; "
            "point the topology at Nexus instead"
        )


@cache
def retired() -> Retired:
    """Load the packaged retired-facts file once."""
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(RETIRED_FILE.read_text(encoding="utf-8"))
    standalone = data["standalone_cache"]
    return Retired(
        folded_on=str(data["folded_into_nexus_on"]),
        addresses=tuple(standalone["addresses"]),
        names=tuple(standalone["names"]),
        keys=frozenset(standalone["keys"]),
        patterns=tuple(RetiredPattern(re.compile(p["regex"]), p["why"]) for p in data["patterns"]),
    )
