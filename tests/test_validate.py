"""One set of argument validators: whole numbers and real numbers, one message style."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.predict import TilingError, predict_tiled
from workbench.validate import real_number, whole_number


def test_whole_numbers():
    assert whole_number(np.int64(5), "n") == 5 and whole_number(0, "halo", minimum=0) == 0
    for bad in (True, 2.0, "3", 0):
        with pytest.raises(WorkbenchError, match=r"`n` must be a whole number >= 1"):
            whole_number(bad, "n")


def test_real_numbers():
    assert real_number(1, "overlap", low=0, high=1) == 1.0
    for bad in (float("nan"), 1.5, False, "0.5"):
        with pytest.raises(WorkbenchError, match=r"`overlap` must be a number in \[0, 1\]"):
            real_number(bad, "overlap", low=0, high=1)


def test_entry_points_share_the_message_and_keep_their_error_type():
    image = np.zeros((1, 64, 64), np.float32)
    with pytest.raises(TilingError, match="`tile_size` must be a whole number >= 1"):
        predict_tiled(image, lambda batch: batch, 1, tile_size=0)
