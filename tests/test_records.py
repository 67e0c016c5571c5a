"""Typed records: what the manifest and the model cards hold, read back with one validator each."""

from __future__ import annotations

import json

import pytest

from workbench.errors import WorkbenchError
from workbench.records import ModelCardInfo, ModelMetrics, ModelRecord, TrainingChoices, TrainingPlan

ENTRY = {"version": 3, "method": "forest", "path": "models/v003-forest", "created": "2026-12-01T10:00:00+00:00",
         "parent": 1, "settings": {"forest": {"n_estimators": 16}}, "labels": {"annotated_fraction": 0.2},
         "metrics": {"seconds": 1.5, "training_balanced_accuracy": 0.97, "n_nodes": 812}}


def test_a_manifest_entry_round_trips_unchanged():
    record = ModelRecord.from_dict(ENTRY)
    assert record.version == 3 and record.method == "forest" and record.parent == 1
    assert record.metrics.seconds == 1.5 and record.metrics.val_loss is None
    assert record.metrics.extra["n_nodes"] == 812
    assert record.to_dict() == ENTRY
    assert json.loads(json.dumps(record.to_dict())) == ENTRY
    assert ModelRecord.from_dict(record) is record
    assert ModelRecord(**ENTRY) == record, "built from the manifest's plain dicts, metrics become typed"


def test_records_are_read_by_attribute_not_as_dicts():
    record = ModelRecord.from_dict(ENTRY)
    assert record.version == 3 and record.parent == 1 and not hasattr(record, "nothing")
    assert record.metrics["n_nodes"] == 812 and record.metrics.get("seconds") == 1.5
    assert dict(record.metrics) == ENTRY["metrics"] and record.metrics == ENTRY["metrics"]
    with pytest.raises(TypeError):
        record["version"]  # the dict-style bridge is gone: a typo'd field cannot read as None
    assert not hasattr(record, "get")
    with pytest.raises(AttributeError):
        record.best_val_loss


@pytest.mark.parametrize("field, value, message", [
    ("version", 0, "`version` must be a whole number >= 1"),
    ("version", True, "`version` must be a whole number"),
    ("method", "svm", "`method` must be one of unet, forest"),
    ("path", None, "`path` must be text"),
    ("parent", "1", "`parent` must be a model version or null"),
    ("metrics", [1, 2], "`metrics` must be a JSON object"),
])
def test_a_damaged_entry_names_the_field_and_the_repair(field, value, message):
    with pytest.raises(WorkbenchError, match=message) as caught:
        ModelRecord.from_dict({**ENTRY, field: value})
    assert "restore project.json" in str(caught.value)


def test_metrics_are_typed_and_a_nan_loss_reads_as_not_measured():
    metrics = ModelMetrics.from_dict({"val_loss": float("nan"), "loss": 0.4, "epochs": 12, "stop_reason": "time"})
    assert metrics.val_loss is None and metrics.loss == 0.4 and metrics.epochs == 12
    with pytest.raises(WorkbenchError, match="`val_loss` must be a number"):
        ModelMetrics.from_dict({"val_loss": "low"})
    with pytest.raises(WorkbenchError, match="`epochs` must be a whole number"):
        ModelMetrics.from_dict({"epochs": 2.5})


def test_card_info_reads_both_methods_cards(tmp_path):
    unet = ModelCardInfo.from_dict({"in_channels": 1, "n_classes": 3, "mode": "instance",
                                    "classes": ["background", "interior", "boundary"]})
    forest = ModelCardInfo.from_dict({"format": "workbench-random-forest", "mode": "semantic", "n_channels": 2,
                                      "classes": ["background", "cell"]})
    assert (unet.mode, unet.in_channels, unet.classes[1]) == ("instance", 1, "interior")
    assert (forest.mode, forest.in_channels) == ("semantic", 2)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="not valid JSON"):
        ModelCardInfo.read(tmp_path)
    with pytest.raises(WorkbenchError, match="cannot read the model card"):
        ModelCardInfo.read(tmp_path / "missing")


def test_training_choices_refuse_what_cannot_work():
    assert TrainingChoices(method="forest", size="small", start="last").size == "small"
    for bad, message in [({"method": "svm"}, "`method`"), ({"size": "huge"}, "`size`"),
                         ({"seconds": 0}, "`seconds`"), ({"augment": 1.5}, "`augment`"),
                         ({"start": "yesterday"}, "`start`"),
                         ({"method": "forest", "start": "pretrained"}, "no pretrained weights")]:
        with pytest.raises(WorkbenchError, match=message):
            TrainingChoices(**bad)
    assert TrainingPlan("unet", {"minutes": 1.0}, True).as_tuple() == ("unet", {"minutes": 1.0}, True)
