"""Short text for error messages."""

from __future__ import annotations

from collections.abc import Iterable


def fmt_keys(keys: Iterable[str], limit: int = 12) -> str:
    """``a, b, c, ... (N more)``: long key lists are truncated (sorted first).

    >>> fmt_keys(["b", "a", "c"], limit=2)
    'a, b, ... (1 more)'
    """
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
