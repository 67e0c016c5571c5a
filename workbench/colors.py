"""Colours as people write them (``"#e6194b"``) and as arrays need them.

Examples
--------
>>> hex_to_rgb("#e6194b"), hex_to_rgb("#fff")
((230, 25, 75), (255, 255, 255))
"""

from __future__ import annotations

from workbench.errors import WorkbenchError

__all__ = ["hex_to_rgb"]


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` (or ``"#rgb"``) as three ints 0..255; anything else is a `WorkbenchError`."""
    text = str(color).strip().lstrip("#")
    if len(text) == 3:
        text = "".join(ch * 2 for ch in text)
    try:
        if len(text) != 6:
            raise ValueError
        return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        raise WorkbenchError(f"colour must be '#rrggbb', got {color!r}") from None
