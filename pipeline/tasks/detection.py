"""Object detection: COCO mAP@[.5:.95] and mAP@.5 computed by pycocotools (the COCO reference implementation).

Labels, per image: {"boxes": float [k, 4] x1 y1 x2 y2 in input pixels, "labels": int [k]}.
A model's raw outputs are turned into detections by post-processing that runs outside the (quantized) graph, in
float on the host, because box decoding and NMS have no integer kernels worth having on the devices (and a fixed
NMS inside the graph would freeze its thresholds into the file). The post-processing is declared by the model
(`postprocess`, stored in the artifact's metadata):
  {"kind": "centernet", "stride": 8, ...}  outputs (heatmap logits [N, C, h, w], box distances [N, 4, h, w]):
      peaks of the class heatmaps (3x3 local maxima), box = cell centre -/+ (left, top, right, bottom) * stride
  {"kind": "boxes"}                         outputs (boxes [N, K, 4] x1y1x2y2, scores [N, K], classes [N, K])
      already decoded (a model with its own decoding): only thresholded and NMS'd here
  {"kind": "yolo"}                          one output [N, 4 + classes, K] (or [N, K, 4 + classes]): boxes decoded in
      the graph as centre x, centre y, width, height in input pixels, then per-class scores (YOLOv8-style exports);
      the best class of each candidate is kept, then NMS'd here
then class-wise NMS (ONNX Runtime's NonMaxSuppression operator, so the boxes kept do not depend on code written here).
"""
from __future__ import annotations

import contextlib
import io
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from pipeline.tasks.base import Task, as_list

POSTPROCESS_DEFAULTS = {"kind": "centernet", "stride": 8, "score_threshold": 0.05, "iou_threshold": 0.6,
                        "max_detections": 100, "pre_nms_top_k": 200}
POSTPROCESS_KINDS = ("centernet", "boxes", "yolo")


# --- scoring ---------------------------------------------------------------------------------------------------
def coco_map(predictions: Sequence[dict], labels: Sequence[dict], num_classes: int) -> dict[str, float]:
    """mAP@[.5:.95] and mAP@.5 over all areas, at most 100 detections per image (COCO's first two summary numbers).

    predictions[i]: {"boxes" [k, 4] x1y1x2y2, "scores" [k], "labels" [k]}; labels[i]: {"boxes", "labels"}."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} images of detections but {len(labels)} of labels")
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(predictions, labels)):
        images.append({"id": i + 1})
        for b, c in zip(np.asarray(t["boxes"], np.float64).reshape(-1, 4), np.asarray(t["labels"]).reshape(-1)):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
        for b, s, c in zip(np.asarray(p["boxes"], np.float64).reshape(-1, 4), np.asarray(p["scores"]).reshape(-1),
                           np.asarray(p["labels"]).reshape(-1)):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    if not anns:
        raise ValueError("the labels hold no boxes: mAP is undefined without ground truth; check the data set")
    if not dets:  # pycocotools cannot load an empty result list; no detection scores 0 by definition
        return {"map50_95": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # stats: -1 where no ground truth exists for a summary entry; the first two always have some here
    return {"map50_95": max(float(ev.stats[0]), 0.0), "map50": max(float(ev.stats[1]), 0.0)}


# --- post-processing (outside the graph) ------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _nms_session():
    """A one-operator ONNX graph running NonMaxSuppression (class-wise, boxes as corners) in ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score"], ["selected"],
                            center_point_box=0)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, None, None]),
         helper.make_tensor_value_info("max_out", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, num_classes: int, iou_threshold: float,
        score_threshold: float, max_detections: int) -> dict[str, np.ndarray]:
    """Class-wise non-maximum suppression of one image's candidates; returns the kept ones, best first."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0, np.int64)}
    if not len(boxes):
        return empty
    per_class = np.zeros((1, num_classes, len(boxes)), np.float32)
    per_class[0, labels, np.arange(len(boxes))] = scores
    sel = _nms_session().run(None, {"boxes": boxes[None], "scores": per_class,
                                    "max_out": np.array([max_detections], np.int64),
                                    "iou": np.array([iou_threshold], np.float32),
                                    "score": np.array([score_threshold], np.float32)})[0]
    if not len(sel):
        return empty
    idx = sel[:, 2]
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_detections]
    return {"boxes": boxes[idx], "scores": scores[idx], "labels": labels[idx]}


def decode_centernet(heatmap: np.ndarray, box: np.ndarray, stride: int, top_k: int) -> tuple[np.ndarray, ...]:
    """One image: heatmap logits [C, h, w], box distances [4, h, w] (in stride units) -> candidate boxes, scores,
    classes. A candidate is a 3x3 local maximum of a class heatmap (CenterNet's peak extraction)."""
    from scipy.ndimage import maximum_filter

    heat = 1.0 / (1.0 + np.exp(-np.asarray(heatmap, np.float32)))
    peaks = heat == maximum_filter(heat, size=(1, 3, 3), mode="constant", cval=-1.0)
    flat = np.where(peaks, heat, 0.0).reshape(-1)
    k = min(top_k, flat.size)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[flat[top] > 0]
    c, rem = np.divmod(top, heat.shape[1] * heat.shape[2])
    y, x = np.divmod(rem, heat.shape[2])
    cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
    d = np.asarray(box, np.float32)[:, y, x] * stride
    boxes = np.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]], axis=1)
    return boxes, flat[top], c


NEEDS = {"centernet": "heatmap, boxes", "boxes": "boxes, scores, classes", "yolo": "[4 + classes, candidates]"}


def decode_yolo(out: np.ndarray, num_classes: int, top_k: int) -> tuple[np.ndarray, ...]:
    """One image of a YOLO-style decoded head, [4 + classes, K] or [K, 4 + classes] (centre x, centre y, width,
    height in input pixels, then class scores) -> the top_k candidates' corner boxes, best score and its class."""
    out = np.asarray(out, np.float32)
    if out.shape[0] != 4 + num_classes and out.shape[-1] == 4 + num_classes:
        out = out.T
    cx, cy, w, h = out[:4]
    cls = out[4:]
    labels, scores = cls.argmax(0), cls.max(0)
    k = min(top_k, scores.size)
    top = np.argpartition(-scores, k - 1)[:k]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)[top]
    return boxes, scores[top], labels[top]


def postprocess(outputs, spec: dict[str, Any], num_classes: int, image_size: tuple[int, int] | None = None) -> list[dict]:
    """A batch of raw outputs -> detections per image, as the model's `postprocess` declares (see module doc)."""
    p = {**POSTPROCESS_DEFAULTS, **(spec or {})}
    outs = as_list(outputs)
    if p["kind"] not in POSTPROCESS_KINDS:
        raise ValueError(f"postprocess.kind {p['kind']!r} is unknown; one of {', '.join(POSTPROCESS_KINDS)}")
    need = {"centernet": 2, "boxes": 3, "yolo": 1}[p["kind"]]
    if len(outs) < need:
        raise ValueError(f"postprocess {p['kind']!r} needs {need} output(s) ({NEEDS[p['kind']]}); the model gives "
                         f"{len(outs)}")
    results = []
    for i in range(len(outs[0])):
        if p["kind"] == "centernet":
            boxes, scores, labels = decode_centernet(outs[0][i], outs[1][i], int(p["stride"]), int(p["pre_nms_top_k"]))
        elif p["kind"] == "yolo":
            boxes, scores, labels = decode_yolo(outs[0][i], num_classes, int(p["pre_nms_top_k"]))
        else:
            boxes, scores, labels = outs[0][i], outs[1][i], outs[2][i]
        if image_size is not None:
            h, w = image_size
            boxes = np.clip(boxes, 0, [w, h, w, h])
        results.append(nms(boxes, scores, labels, num_classes, float(p["iou_threshold"]),
                           float(p["score_threshold"]), int(p["max_detections"])))
    return results


class Detection(Task):
    name = "detection"
    metrics = ("map50_95", "map50")
    higher_is_better = {"map50_95": True, "map50": True}
    # mAP@.5 of the model's detections scored against its source's confident detections (no labels needed). A faithful
    # int8 detector moves boxes by a pixel or two and scores by a few percent: matched at IoU 0.5 it keeps 0.95 or
    # more; 0.9 leaves room for borderline detections crossing the score threshold. A detector that lost a third of
    # its mAP scores far below (0.34 for one that fell from 60.8 to 26.7 mAP@[.5:.95]).
    parity_thresholds = {"min_map50_agreement": 0.9}
    reference_score = 0.3  # the source's detections above this score are the "truth" of the agreement

    def __init__(self, num_classes: int | None = None, postprocess: dict[str, Any] | None = None,
                 image_size: tuple[int, int] | None = None, **_: Any):
        self.num_classes = num_classes
        self.spec = {**POSTPROCESS_DEFAULTS, **(postprocess or {})}
        self.image_size = tuple(image_size) if image_size else None

    def _classes(self, outputs) -> int:
        if self.num_classes:
            return int(self.num_classes)
        if self.spec["kind"] == "centernet":
            return int(as_list(outputs)[0].shape[1])
        if self.spec["kind"] == "yolo":
            return int(min(as_list(outputs)[0].shape[1:])) - 4
        raise ValueError("detection: give num_classes (the data's class count) for already-decoded boxes")

    def detections(self, outputs) -> list[dict]:
        return postprocess(outputs, self.spec, self._classes(outputs), self.image_size)

    def evaluate(self, outputs, labels) -> dict[str, float]:
        return coco_map(self.detections(outputs), labels, self._classes(outputs))

    def agreement(self, reference, outputs, labels=None) -> dict[str, float]:
        ref, got = self.detections(reference), self.detections(outputs)
        pseudo = [{"boxes": r["boxes"][r["scores"] >= self.reference_score],
                   "labels": r["labels"][r["scores"] >= self.reference_score]} for r in ref]
        out = {}
        if any(len(t["labels"]) for t in pseudo):
            out["map50_agreement"] = coco_map(got, pseudo, self._classes(outputs))["map50"]
        if labels is not None:
            a, b = coco_map(ref, labels, self._classes(reference)), coco_map(got, labels, self._classes(outputs))
            out.update(map50_95_reference=a["map50_95"], map50_95=b["map50_95"],
                       map50_95_drop=a["map50_95"] - b["map50_95"])
        return out

    def loss(self, outputs, labels, input_size: tuple[int, int]):
        """Training loss of the model's head on a batch (torch); the head's own loss (see pipeline.models.detector)."""
        from pipeline.models.detector import centernet_loss

        return centernet_loss(outputs, labels, int(self.spec["stride"]), input_size)

    def check_model(self, outputs, num_classes):
        if self.spec["kind"] == "yolo":
            shape = (outputs[0].get("shape") if outputs else None) or []
            if len(outputs) != 1 or len(shape) != 3:
                return [f"postprocess 'yolo' needs one output [batch, 4 + classes, candidates]; the model gives "
                        f"{[o.get('shape') for o in outputs]}: declare the model's postprocess (kind: boxes or "
                        f"centernet)"]
            return []
        if self.spec["kind"] == "centernet":
            if len(outputs) != 2:
                return [f"postprocess 'centernet' needs two outputs (heatmap [N, classes, h, w], boxes [N, 4, h, w]); "
                        f"the model gives {len(outputs)}: declare the model's postprocess (kind: boxes for decoded "
                        f"boxes, scores, classes)"]
            classes = (outputs[0].get("shape") or [None, None])[1]
            if num_classes is not None and isinstance(classes, int) and classes != num_classes:
                return [f"the detector predicts {classes} classes but the data has {num_classes}: retrain its head "
                        f"for {num_classes} classes or use data with the model's {classes} classes"]
        return []
