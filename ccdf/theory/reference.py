"""docs/reference/THEORY.md's reference values, one file for the report and the tests:
``ccdf/assets/theory/reference.json``.

Each value carries the one tolerance it is checked with (half a unit of THEORY's last printed digit;
``t0* = 0``: half a grid step; integers exactly). :func:`ccdf.theory.report.write_report` checks every
entry of ``values`` it recomputes; ``tests/test_theory*.py`` assert with the same tolerances. ``project``
holds the project sampler's own readings (no last-step noise), ``deviations`` where THEORY's printed
value is wrong, with ours and the reason.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "assets" / "theory" / "reference.json"


@lru_cache(maxsize=1)
def load_reference() -> dict[str, Any]:
    """The parsed reference file (``values``, ``project``, ``deviations``, ``rule``, ``num_steps``)."""
    try:
        return json.loads(REFERENCE_FILE.read_text())
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot read THEORY's reference values {REFERENCE_FILE}: {err}") from err


def reference(key: str, section: str = "values") -> tuple[float, float]:
    """``(value, tolerance)`` of one entry (``section``: ``values``, ``project`` or ``deviations``: ours)."""
    entries = load_reference()[section]
    if key not in entries:
        raise KeyError(f"{key!r} is not in {section} of {REFERENCE_FILE}")
    entry = entries[key]
    value = entry["theory"] if section == "values" else entry["value" if section == "project" else "ours"]
    return float(value), float(entry["tolerance"])


def within(key: str, ours: float, section: str = "values") -> bool:
    """Whether ``ours`` is within the entry's tolerance (1e-12 of slack for the decimal rounding)."""
    value, tol = reference(key, section)
    return abs(float(ours) - value) <= tol + 1e-12
