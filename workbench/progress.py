"""The one progress bar of the command line: tqdm on stderr, driven by ``progress(fraction, message)``.

The bar appears at the first update, so a command that fails on its input prints only its
error line. Training (`workbench.deep.TqdmProgress`) and prediction draw the same bar.

Examples
--------
>>> bar = ProgressBar("predicting", disable=True)
>>> bar(0.5, "tile 3 of 6"); bar(1.0); bar.close()
>>> bar.fraction
1.0
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """A ``progress(fraction, message)`` callable that draws a tqdm bar.

    Parameters
    ----------
    desc : str
        Shown left of the bar.
    **tqdm_kwargs
        Passed to ``tqdm.auto.tqdm`` (e.g. ``disable=True``, ``bar_format``).
    """

    STEPS = 1000

    def __init__(self, desc: str, **tqdm_kwargs: Any):
        self._kwargs = {"desc": desc, "file": sys.stderr, "leave": True, "unit": "",
                        "bar_format": "{l_bar}{bar}| {elapsed}<{remaining}{postfix}", **tqdm_kwargs}
        self._bar = None
        self.fraction = 0.0

    def _ensure(self):
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.STEPS, **self._kwargs)
        return self._bar

    def __call__(self, fraction: float, message: str = "") -> None:
        bar = self._ensure()
        self.fraction = float(min(max(fraction, 0.0), 1.0))
        bar.n = int(round(self.fraction * self.STEPS))
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    def set_postfix(self, values: dict) -> None:
        """Show `values` (e.g. the epoch's losses) right of the bar."""
        self._ensure().set_postfix(values, refresh=True)

    def close(self) -> None:
        """Finish the bar (safe to call twice, or when it never appeared)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
