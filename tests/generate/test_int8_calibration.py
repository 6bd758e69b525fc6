"""`radgen model calibrate-int8` writes a model's activation ranges, and int8 loading smooths with them."""

from __future__ import annotations

import logging
import shutil

import pytest

from radgen.cli import main
from radgen.errors import DataError
from radgen.generate.decode import load_model
from radgen.models import fast
from radgen.models.fast import base_model, int8_supported
from radgen.models.int8 import ACTIVATION_RANGES_FILE, load_activation_ranges

pytestmark = pytest.mark.skipif(not int8_supported(), reason="no torch quantized engine on this CPU/build (or fast paths off)")


def test_calibrate_then_int8_loading_uses_the_ranges(phantom, saved_small, tmp_path, capsys, caplog):
    manifest, _ = phantom
    folder = tmp_path / "model"
    shutil.copytree(saved_small[0], folder)
    fast._note_once.cache_clear()  # notes are once per process: another test may have logged this one
    with caplog.at_level(logging.INFO, logger="radgen.models.fast"):
        plain = load_model(folder, dtype="int8")
    assert any(ACTIVATION_RANGES_FILE in r.getMessage() and "calibrate-int8" in r.getMessage() for r in caplog.records)

    assert main(["model", "calibrate-int8", str(folder), "--data", str(manifest), "--split", "train"]) == 0
    assert "on 1 'train' studies" in capsys.readouterr().out
    ranges = load_activation_ranges(folder)
    assert ranges and "lm_head" in ranges and all(bool((r >= 0).all()) and bool((r > 0).any()) for r in ranges.values())

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="radgen.models.fast"):
        model = load_model(folder, dtype="int8")
    assert not any(ACTIVATION_RANGES_FILE in r.getMessage() for r in caplog.records)
    # smoothed: the scales are folded into the norms, so their weights moved (by the recorded ranges)
    norms = [base_model(m.decoder).get_decoder().norm.weight for m in (plain, model)]
    assert norms[0].shape == norms[1].shape and not norms[0].allclose(norms[1])

    assert main(["model", "calibrate-int8", str(folder), "--data", str(manifest), "--split", "nope"]) == 2
    assert "no study has split 'nope'" in capsys.readouterr().err

    # a damaged file stops int8 loading with its name, and never the default dtype's
    (folder / ACTIVATION_RANGES_FILE).write_bytes(b"damaged")
    load_model(folder)
    with pytest.raises(DataError, match=ACTIVATION_RANGES_FILE):
        load_model(folder, dtype="int8")
