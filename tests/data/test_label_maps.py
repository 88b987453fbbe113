"""The run's label map from the data window (components/label_maps.py) and the Evaluator config fitted to it."""
import json

import pytest

from components import label_maps
from components.evaluation import fit_to_classes, make_eval_config


def _label_map(root, rel, labels):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{label}\n" for label in labels))


def test_the_window_label_map_is_the_union_of_its_spans(tmp_path):
    _label_map(tmp_path, "span-1/label_map.txt", ["up", "down"])
    _label_map(tmp_path, "span-2/label_map.txt", ["left", "up"])
    _label_map(tmp_path, "day=20261201/labels.txt", ["b", "a"])
    assert label_maps.window_labels(str(tmp_path), "span-{SPAN}/label_map.txt", [1, 2]) == ["down", "left", "up"]
    assert label_maps.window_labels(str(tmp_path), "span-{SPAN}/label_map.txt", [2]) == ["left", "up"]
    day = 20788   # 2026-12-01 as TFX numbers date spans: days since 1970-01-01
    assert label_maps.window_labels(str(tmp_path), "day={YYYY}{MM}{DD}/labels.txt", [day]) == ["a", "b"]
    _label_map(tmp_path, "label_map.txt", ["x", "y"])        # one file for every span
    assert label_maps.window_labels(str(tmp_path), "label_map.txt", [1, 2]) == ["x", "y"]
    with pytest.raises(FileNotFoundError, match=r"span-3/label_map.txt not found"):
        label_maps.window_labels(str(tmp_path), "span-{SPAN}/label_map.txt", [2, 3])


def test_classes_against_the_served_model():
    assert label_maps.check_against_served(["a", "b", "c"], label_maps.DATA, ["a", "b"]) == ["c"]
    assert label_maps.check_against_served(["a", "b"], label_maps.DATA, None) == []          # an older export
    with pytest.raises(ValueError, match=r"lacks \['c'\].*configure `labels` explicitly"):
        label_maps.check_against_served(["a", "b"], label_maps.DATA, ["a", "b", "c"])
    assert label_maps.check_against_served(["a", "b"], label_maps.CONFIG, ["a", "b", "c"]) == []


def test_the_eval_config_is_fitted_to_the_models_classes():
    unknown = make_eval_config(None, 0.5, 0.02, top_k=3)           # the labels are read when the run starts
    fitted = fit_to_classes(unknown, 2)
    per_class = next(s for s in fitted.metrics_specs if s.HasField("binarize"))
    assert list(per_class.binarize.class_ids.values) == [0, 1]
    top_k = next(m for s in fitted.metrics_specs for m in s.metrics if m.class_name == "SparseTopKCategoricalAccuracy")
    assert json.loads(top_k.config)["k"] == 2
    assert fit_to_classes(unknown, 8).metrics_specs[1].binarize.class_ids.values == list(range(8))
    assert make_eval_config(None, 0.5, 0.02).metrics_specs[1].binarize.class_ids.values == []   # unchanged input
