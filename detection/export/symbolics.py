"""ONNX translations of the toolkit's ops for the TorchScript-based exporter (`torch.onnx.export(dynamo=False)`).

    register_onnx_symbolics()    # idempotent; detection/export/onnx.py calls it before exporting

- `detection::nms(boxes [N, 4], scores [N], iou)` -> NonMaxSuppression on [1, N, 4] / [1, 1, N] with no output
  limit, then column 2 of the [K, 3] selection: indices by decreasing score. Both suppress at IoU > threshold.
- `detection::roi_align` -> RoiAlign-16 (avg): `aligned` True / False is coordinate_transformation_mode
  half_pixel / output_half_pixel; sampling_ratio <= 0 (adaptive) is ONNX's 0; rois [K, 5] split into batch
  indices and boxes.
- `detection::roi_pool` -> MaxRoiPool (the argmax output, used only by the backward pass, is not exported).
- `detection::batched_nms(boxes, scores, idxs, iou)` -> one NonMaxSuppression with per-category scores [1, C, N]
  (C = the distinct idxs, by Unique; a box's score in its own category's row, -inf elsewhere, and a score threshold
  of -FLT_MAX that drops the -inf entries), then the kept indices ordered as batched_nms orders them: decreasing
  score, equal scores by lower index (two TopK: ONNX's TopK puts the lower position first among equal values).
  Boxes scored -inf are therefore dropped in the graph, unlike eagerly.
- `detection::soft_nms` has no ONNX operator: exporting it raises an error that names TEST.NMS_METHOD (torch.export
  keeps the op itself).

torchvision's ops/_register_onnx_ops.py is the reference for the mapping. The torch.export-based ONNX exporter
would need onnxscript, which this toolkit does not depend on.
"""
from __future__ import annotations

import sys

import torch

__all__ = ["OPSET", "register_onnx_symbolics"]

#: the opset the exporter targets (RoiAlign-16 has the half-pixel coordinate mode)
OPSET = 17

_registered = False


def _const(g, value, dtype=torch.int64):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _nms(g, boxes, scores, iou_threshold):
    from torch.onnx import symbolic_helper as sh

    iou = float(sh._maybe_get_const(iou_threshold, "f"))
    float_type = torch.onnx.TensorProtoDataType.FLOAT
    boxes = g.op("Unsqueeze", g.op("Cast", boxes, to_i=float_type), _const(g, [0]))  # [1, N, 4]
    scores = g.op("Unsqueeze", g.op("Cast", scores, to_i=float_type), _const(g, [0, 1]))  # [1, 1, N]
    selected = g.op("NonMaxSuppression", boxes, scores, _const(g, [sys.maxsize]),
                    _const(g, [iou], torch.float32))  # [K, 3] (batch, class, box index)
    return g.op("Gather", selected, _const(g, 2), axis_i=1)  # [K] int64


def _batched_nms(g, boxes, scores, idxs, iou_threshold):
    from torch.onnx import symbolic_helper as sh

    iou = float(sh._maybe_get_const(iou_threshold, "f"))
    float_type = torch.onnx.TensorProtoDataType.FLOAT
    boxes = g.op("Unsqueeze", g.op("Cast", boxes, to_i=float_type), _const(g, [0]))  # [1, N, 4]
    scores = g.op("Cast", scores, to_i=float_type)  # [N]
    categories, _, inverse, _ = g.op("Unique", g.op("Cast", idxs, to_i=torch.onnx.TensorProtoDataType.INT64),
                                     sorted_i=1, outputs=4)  # inverse: [N] category 0..C-1 of each box
    count = g.op("Gather", g.op("Shape", categories), _const(g, 0), axis_i=0)  # C (a scalar)
    rows = g.op("Range", _const(g, 0), count, _const(g, 1))  # [C]
    own = g.op("Equal", g.op("Unsqueeze", rows, _const(g, [1])), g.op("Unsqueeze", inverse, _const(g, [0])))
    per_category = g.op("Where", own, g.op("Unsqueeze", scores, _const(g, [0])),
                        _const(g, float("-inf"), torch.float32))  # [C, N]
    selected = g.op("NonMaxSuppression", boxes, g.op("Unsqueeze", per_category, _const(g, [0])),
                    _const(g, [sys.maxsize]), _const(g, [iou], torch.float32),
                    _const(g, [-torch.finfo(torch.float32).max], torch.float32))  # [K, 3]
    index = g.op("Gather", selected, _const(g, 2), axis_i=1)  # [K], grouped by category
    k = g.op("Shape", index)
    by_index = g.op("TopK", index, k, axis_i=0, largest_i=0, sorted_i=1, outputs=2)[0]  # ascending indices
    by_score = g.op("TopK", g.op("Gather", scores, by_index, axis_i=0), k, axis_i=0, largest_i=1, sorted_i=1,
                    outputs=2)[1]
    return g.op("Gather", by_index, by_score, axis_i=0)


def _soft_nms(g, *args):
    raise RuntimeError(
        "Soft-NMS (detection::soft_nms) has no ONNX operator and cannot be exported to ONNX: set TEST.NMS_METHOD: "
        "hard for the ONNX export, or export with torch.export (detection.export.export_program), which keeps the op")


def _split_rois(g, rois):
    batch = g.op("Gather", rois, _const(g, 0), axis_i=1)
    batch = g.op("Cast", batch, to_i=torch.onnx.TensorProtoDataType.INT64)
    boxes = g.op("Gather", rois, _const(g, [1, 2, 3, 4]), axis_i=1)
    return boxes, batch


def _roi_align(g, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    from torch.onnx import symbolic_helper as sh

    boxes, batch = _split_rois(g, rois)
    ratio = int(sh._maybe_get_const(sampling_ratio, "i"))
    return g.op("RoiAlign", input, boxes, batch,
                coordinate_transformation_mode_s="half_pixel" if sh._maybe_get_const(aligned, "b")
                else "output_half_pixel",
                mode_s="avg", output_height_i=int(sh._maybe_get_const(pooled_height, "i")),
                output_width_i=int(sh._maybe_get_const(pooled_width, "i")),
                sampling_ratio_i=max(ratio, 0), spatial_scale_f=float(sh._maybe_get_const(spatial_scale, "f")))


def _roi_pool(g, input, rois, spatial_scale, pooled_height, pooled_width):
    from torch.onnx import symbolic_helper as sh

    shape = (int(sh._maybe_get_const(pooled_height, "i")), int(sh._maybe_get_const(pooled_width, "i")))
    out = g.op("MaxRoiPool", input, rois, pooled_shape_i=shape,
               spatial_scale_f=float(sh._maybe_get_const(spatial_scale, "f")))
    return out, None


def register_onnx_symbolics() -> None:
    """Register the translations above with torch.onnx (once per process)."""
    global _registered
    if _registered:
        return
    import detection.ops  # noqa: F401  (the ops must exist before their symbolics are registered)
    from torch.onnx import register_custom_op_symbolic

    register_custom_op_symbolic("detection::nms", _nms, 11)
    register_custom_op_symbolic("detection::batched_nms", _batched_nms, 11)
    register_custom_op_symbolic("detection::soft_nms", _soft_nms, 11)
    register_custom_op_symbolic("detection::roi_align", _roi_align, 16)
    register_custom_op_symbolic("detection::roi_pool", _roi_pool, 11)
    _registered = True
