"""The argument validators every entry point shares: one message style, one notion of "a number".

Each returns the converted value or raises `error` (a `WorkbenchError` subclass of the caller's
choosing) with a message that names the argument, what arrived and what was expected. Booleans
are refused where a number is asked for (``True`` is an int to Python, never to a user).

Examples
--------
>>> whole_number(3, "tile_size")
3
>>> whole_number(0, "halo", minimum=0)
0
>>> whole_number(2.5, "tile_size")
Traceback (most recent call last):
...
workbench.errors.WorkbenchError: `tile_size` must be a whole number >= 1, got 2.5.
>>> real_number(0.25, "overlap", low=0, high=1)
0.25
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from workbench.errors import WorkbenchError

__all__ = ["whole_number", "real_number"]


def whole_number(value: Any, name: str, *, minimum: int | None = 1,
                 error: type[WorkbenchError] = WorkbenchError) -> int:
    """`value` as an ``int`` if it is an integer (numpy's too) of at least `minimum` (None: any)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
            minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise error(f"`{name}` must be a whole number{bound}, got {value!r}.")
    return int(value)


def real_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                error: type[WorkbenchError] = WorkbenchError) -> float:
    """`value` as a finite ``float`` within ``[low, high]`` (either bound may be None)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            wanted = f"a number in [{low}, {high}]"
        elif low is not None:
            wanted = f"a number >= {low}"
        elif high is not None:
            wanted = f"a number <= {high}"
        else:
            wanted = "a finite number"
        raise error(f"`{name}` must be {wanted}, got {value!r}.")
    return float(value)
