"""Secrets never shown: credentials inside URLs, masked before a message or a diff is printed."""

from __future__ import annotations

import re


def mask_credentials(text: str) -> str:
    """`scheme://user:password@host…` with the user and password replaced by `***`.

    The credentials run to the last `@` before the next white space, so a password holding a raw `/` or `@`
    is hidden whole (a path holding `@` is masked up to it: more hidden, nothing shown).
    """
    return re.sub(r"//\S*@", "//***@", text)
