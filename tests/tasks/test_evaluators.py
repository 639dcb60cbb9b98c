"""Each task's evaluator against a case small enough to check by hand."""
import math

import numpy as np
import pytest

from pipeline import tasks

from pipeline.library import parity_metrics
from pipeline.tasks import detection, segmentation


def test_detection_map_matches_hand_computed_coco_ap():
    # Two images, three ground-truth boxes of one class. Detections, best first: d1 = box A exactly (TP), d2 = a
    # false positive in image 1, d3 = box C shifted by 2 px (IoU 80/120 = 0.667). Box B is never found.
    labels = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), "labels": np.array([0, 0])},
              {"boxes": np.array([[0, 0, 10, 10]], float), "labels": np.array([0])}]
    preds = [{"boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), "scores": np.array([0.9, 0.8]),
              "labels": np.array([0, 0])},
             {"boxes": np.array([[2, 0, 12, 10]], float), "scores": np.array([0.7]), "labels": np.array([0])}]
    m = detection.coco_map(preds, labels, num_classes=1)
    # COCO's 101-point interpolated AP. IoU thresholds .50-.65 (4 of 10): TP FP TP, recall 1/3 at precision 1, then
    # 2/3 at 2/3 -> (34 * 1 + 33 * 2/3) / 101 = 56/101. Thresholds .70-.95 (6): TP FP FP -> 34/101.
    assert m["map50"] == pytest.approx(56 / 101, abs=1e-6)
    assert m["map50_95"] == pytest.approx((4 * 56 + 6 * 34) / 1010, abs=1e-6)


def test_detection_no_detections_scores_zero_and_empty_truth_is_refused():
    labels = [{"boxes": np.array([[0, 0, 10, 10]], float), "labels": np.array([0])}]
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    assert detection.coco_map(empty, labels, 1) == {"map50_95": 0.0, "map50": 0.0}
    with pytest.raises(ValueError, match="no boxes"):
        detection.coco_map(empty, [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}], 1)


def test_nms_keeps_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    labels = np.array([0, 0, 1, 0])
    kept = detection.nms(boxes, scores, labels, num_classes=2, iou_threshold=0.5, score_threshold=0.05,
                         max_detections=10)
    # box 1 overlaps box 0 (IoU 0.82, same class): dropped; box 2 is the other class: kept
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept["labels"].tolist() == [0, 1, 0]


def test_centernet_decoding_finds_the_encoded_box():
    # one object of class 1, centre cell (row 2, col 3) at stride 8: box = centre -/+ distances * stride
    heat = np.full((2, 6, 6), -10.0, np.float32)
    heat[1, 2, 3] = 5.0
    dist = np.zeros((4, 6, 6), np.float32)
    dist[:, 2, 3] = [1.0, 0.5, 1.0, 0.5]
    task = tasks.get("detection", postprocess={"kind": "centernet", "stride": 8})
    (det,) = task.detections([heat[None], dist[None]])
    assert det["labels"].tolist() == [1]
    np.testing.assert_allclose(det["boxes"][0], [28 - 8, 20 - 4, 28 + 8, 20 + 4])
    labels = [{"boxes": np.array([[20, 16, 36, 24]], float), "labels": np.array([1])}]
    assert task.evaluate([heat[None], dist[None]], labels)["map50"] == pytest.approx(1.0)


def test_segmentation_4x4_mask_known_iou():
    # label: left half class 0, right half class 1; prediction: one class-1 pixel predicted as 0, one pixel ignored
    target = np.array([[0, 0, 1, 1]] * 4)
    target[3, 3] = 255
    pred = np.array([[0, 0, 1, 1]] * 4)
    pred[0, 2] = 0
    logits = np.stack([(pred == 0), (pred == 1)]).astype(np.float32)[None]  # [1, 2, 4, 4]
    m = tasks.get("segmentation").evaluate([logits], target[None])
    # 15 counted pixels. class 0: TP 8, union 8 + 1 = 9; class 1: TP 6, union 7 -> mIoU (8/9 + 6/7) / 2
    assert m["miou"] == pytest.approx((8 / 9 + 6 / 7) / 2)
    assert m["pixel_acc"] == pytest.approx(14 / 15)


def test_segmentation_absent_class_is_not_averaged_and_bad_mask_values_named():
    cm = segmentation.confusion(np.zeros(4, int), np.zeros(4, int), num_classes=3)
    assert segmentation.scores(cm)["miou"] == 1.0  # classes 1 and 2 occur nowhere
    with pytest.raises(ValueError, match=r"mask values \[7\]"):
        segmentation.confusion(np.zeros(2, int), np.array([0, 7]), num_classes=3)


def test_classification_top1_top5_and_agreement():
    logits = np.array([[0.1, 0.9, 0, 0, 0, 0], [0.8, 0.1, 0.05, 0.02, 0.01, 0.3], [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]])
    labels = np.array([1, 5, 5])
    m = tasks.get("classification").evaluate(logits, labels)
    # sample 0 right; sample 1's label is 2nd best (top-5 only); sample 2's label is the 6th of 6 (neither)
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top5"] == pytest.approx(2 / 3)
    other = logits.copy()
    other[0] = [1, 0, 0, 0, 0, 0]
    a = tasks.get("classification").agreement([logits], [other], labels)
    assert a["top1_agreement"] == pytest.approx(2 / 3)
    assert a["top1_drop"] == pytest.approx(1 / 3)


def test_class_mismatch_names_both_counts():
    (msg,) = tasks.get("classification").check_model([{"name": "logits", "shape": [1, 1000]}], num_classes=5)
    assert "1000 classes" in msg and "has 5" in msg


def test_task_registry_and_data_check():
    assert tasks.names() == ["classification", "detection", "segmentation", "none"]
    assert tasks.primary_metric("detection") == "map50_95" and tasks.primary_metric("none") is None
    assert tasks.check_data("detection", "digits_detection") == []
    (msg,) = tasks.check_data("segmentation", "coco")
    assert "masks" in msg and "coco" in msg
    with pytest.raises(ValueError, match="unknown task 'depth'"):
        tasks.get("depth")
    assert tasks.get("none").evaluate([np.zeros((2, 3))]) == {}


def test_parity_metrics_per_output():
    ref = {"heatmap": np.ones((2, 3, 4, 4)), "boxes": np.arange(8.0).reshape(2, 4)}
    got = {"heatmap": np.ones((2, 3, 4, 4)), "boxes": np.arange(8.0).reshape(2, 4) + 0.1}
    m = parity_metrics.compare_outputs(ref, got)
    assert m["heatmap"]["cosine"] == 1.0 and math.isinf(m["heatmap"]["snr_db"])
    signal, noise = (np.arange(8.0) ** 2).sum(), 8 * 0.01
    assert m["boxes"]["snr_db"] == pytest.approx(10 * math.log10(signal / noise))
    assert m["boxes"]["max_abs_error"] == pytest.approx(0.1) and m["boxes"]["mean_abs_error"] == pytest.approx(0.1)
    assert parity_metrics.worst(m)["snr_db"] == m["boxes"]["snr_db"]
    (v,) = parity_metrics.violations(m, min_snr_db=40)
    assert "'boxes'" in v and "min_snr_db 40" in v
    with pytest.raises(ValueError, match="different outputs"):
        parity_metrics.compare_outputs(ref, {"heatmap": ref["heatmap"]})


def test_task_layer_imports_no_ml_framework():
    import subprocess
    import sys

    code = """
import sys
from pipeline import tasks
from pipeline.library import signature, parity_metrics
for name in tasks.names():
    tasks.get(name)
    for d in tasks.DATASETS[name]:
        tasks.data_module(d)
heavy = [m for m in ("torch", "tensorflow", "onnxruntime", "litert_torch", "ai_edge_litert", "onnx", "keras")
         if m in sys.modules]
print("HEAVY:", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY: []" in out.stdout, out.stdout


def test_detection_map_averages_classes_and_a_wrong_class_is_a_miss():
    # One image, two classes. Class 0: its box found exactly (AP 1). Class 1: its box found at the right place but
    # labelled class 0 (a false positive of class 0 ranked below the true one) and never as class 1 (AP 0).
    labels = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), "labels": np.array([0, 1])}]
    preds = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), "scores": np.array([0.9, 0.8]),
              "labels": np.array([0, 0])}]
    m = detection.coco_map(preds, labels, num_classes=2)
    # class 0: TP then FP -> precision 1 up to recall 1: AP 1 at every IoU; class 1: AP 0; the mean of the two
    assert m["map50"] == pytest.approx(0.5) and m["map50_95"] == pytest.approx(0.5)


def test_detection_agreement_scores_a_model_against_its_source():
    heat = np.full((1, 2, 6, 6), -10.0, np.float32)
    heat[0, 1, 2, 3] = 5.0
    dist = np.zeros((1, 4, 6, 6), np.float32)
    dist[0, :, 2, 3] = 1.0
    task = tasks.get("detection", postprocess={"kind": "centernet", "stride": 8})
    same = task.agreement([heat, dist], [heat, dist])
    assert same["map50_agreement"] == pytest.approx(1.0)
    moved = dist.copy()
    moved[0, :, 2, 3] = [1.0, 1.0, -0.9, -0.9]  # a box of 0.1 x 0.1 cells: no overlap worth IoU 0.5
    assert task.agreement([heat, dist], [heat, moved])["map50_agreement"] == pytest.approx(0.0)


def test_segmentation_agreement_counts_pixels_of_the_same_class():
    ref = np.zeros((1, 2, 2, 2), np.float32)
    ref[0, 1] = 1.0  # every pixel class 1
    got = ref.copy()
    got[0, 0, 0, 0] = 2.0  # one of four pixels flips to class 0
    a = tasks.get("segmentation").agreement([ref], [got])
    assert a["pixel_agreement"] == pytest.approx(0.75)
    # against the source's classes: class 1 IoU 3/4, class 0 (predicted once, never in the source) IoU 0
    assert a["miou_agreement"] == pytest.approx((0.75 + 0.0) / 2)


def test_unlabelled_task_scores_nothing_and_needs_no_labels():
    none = tasks.get("none")
    assert not none.needs_labels and none.primary is None
    assert none.evaluate([np.ones((2, 16))]) == {} and none.agreement([np.ones((2, 16))], [np.ones((2, 16))]) == {}
