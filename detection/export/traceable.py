"""Single-image inference modules that trace: what ONNX and torch.export record.

    net = DetectorExport(model)          # model: an eval-mode FasterRCNN
    boxes, scores, labels = net(image)   # image [3, H, W] float RGB 0..1 -> [N, 4] xyxy (input pixels), [N], [N]
    net = ClassifierExport(model)        # model: an ImageClassifier
    logits, probs = net(image)           # [3, H, W] -> [K], [K]

They call the trained model's own submodules (trunk, RPN head, box coder, pooler, box head, predictors) and
redo, for one image, the eager model's arithmetic step by step, so that their outputs equal `model([image])`:
the eager code is batched and sizes its tensors from Python numbers (`int(...)`, `.tolist()`, resize factors as
floats), which a tracer would freeze at the example's values. Here every size is a tensor computed inside the
graph: the resize factor (float64, the same IEEE operations as the eager Python floats), the padded size, the
anchor grid, the number of pre-NMS candidates, and every count after a score threshold or an NMS. Under
`torch.jit.trace` (the ONNX exporter) sizes flow as 0-d tensors; under `torch.export` they become unbacked
symbolic integers (`_as_size`).
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.box_coder import box_sides_at_least
from detection.ops import nms

__all__ = ["DetectorExport", "ClassifierExport", "export_module", "resize_size", "INPUT_NAMES", "OUTPUT_NAMES"]


def _tracing() -> bool:
    return torch.jit.is_tracing()


def _shape(x: Tensor, dims) -> Tensor:
    """x.shape[dims] as an int64 tensor: the graph's Shape under the tracer, symbolic sizes under torch.export."""
    if _tracing():
        return torch._shape_as_tensor(x)[list(dims)]
    return torch.stack([torch.scalar_tensor(x.shape[d], dtype=torch.int64) for d in dims])


def _top_n(x: Tensor, cap: int):
    """min(cap, len(x)) as a size argument (a 0-d tensor under the tracer, a symbolic int under torch.export)."""
    if _tracing():
        return torch.clamp(torch._shape_as_tensor(x)[0], max=cap)
    return torch.sym_min(cap, x.shape[0])


def _as_size(t: Tensor, least: int = 0):
    """A 0-d int64 size tensor (known to be >= least) as an argument of ops that take ints (interpolate, pad,
    arange)."""
    if _tracing():
        return t  # the tracer records the tensor, so the size stays dynamic in the graph
    v = t.item()  # an int; under torch.export an unbacked SymInt, whose lower bound lets later checks pass
    torch._check(v >= least)
    return v


def resize_size(hw: Tensor, min_size: float, max_size: float, rule: str) -> Tuple[Tensor, Tensor]:
    """detection/ops/resize.py's resize_scale + resized_size on a float64 [2] (h, w) tensor.

    Returns (new size int64 [2], scale float64 []): the same float64 operations as the Python floats of the eager
    preprocessor, so the sizes are identical for every input size."""
    short, long = hw.min(), hw.max()
    if rule == "torchvision":
        scale = min_size / short
        if max_size > 0:
            scale = torch.minimum(scale, max_size / long)
        new = torch.floor(hw * scale)
    else:
        scale = min_size / short
        if max_size > 0:
            scale = torch.where(torch.round(long * scale) > max_size, max_size / long, scale)
        new = torch.round(hw * scale)
    new = torch.where(scale == 1.0, hw, new)
    return new.clamp(min=1).to(torch.int64), scale


class DetectorExport(nn.Module):
    """One image through a FasterRCNN in eval mode, every size computed in the graph.

    forward(image [3, H, W] float32 RGB 0..1) -> boxes [N, 4] float32 xyxy in the image's pixels, scores [N]
    float32, labels [N] int64 in 1..K, by decreasing score; N = 0 when nothing scores above TEST.SCORE_THRESH.
    Test-time augmentation is not part of it (one view at TEST.SCALES[0], the model's own test resize).

    The trunk may return one map (C4) or a dict of pyramid levels (FPN): the RPN then runs its head, anchors and
    top-k per level and its NMS per level, and the RoI pooler (MultiScaleRoIAlign) maps each RoI to a level.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        pre, rpn, heads = model.preprocess, model.rpn, model.roi_heads
        self.model = model
        self.min_size, self.max_size = float(pre.test_min_size), float(pre.test_max_size)
        self.rule, self.divisor = pre.resize_rule, int(pre.size_divisibility)
        self.normalise_first = bool(getattr(pre, "_normalise_first", False))
        gen = rpn.anchor_generator
        self.generators = list(getattr(gen, "generators", [gen]))  # one per level
        # the multi-level RPN ranks candidates by sigmoid probability, the one-level one by logit (same order)
        self.rpn_sigmoid = hasattr(gen, "generators")
        self.pre_nms_top_n, self.post_nms_top_n = int(rpn.pre_nms_top_n[1]), int(rpn.post_nms_top_n[1])
        self.rpn_nms_thresh, self.rpn_min_size = float(rpn.nms_thresh[1]), float(rpn.min_size[1])
        self.rpn_min_size_scaled = bool(getattr(rpn, "min_size_scaled", True))
        self.min_box_size = float(getattr(heads, "min_box_size", 1e-3))

    # -- input side ---------------------------------------------------------------------------------------------
    def preprocess(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """[3, H, W] -> (normalised padded batch [1, 3, Hp, Wp], resized size int64 [2], scale float64 [])."""
        pre = self.model.preprocess
        hw = _shape(image, (1, 2)).to(torch.float64)
        new, scale = resize_size(hw, self.min_size, self.max_size, self.rule)
        nh, nw = new[0], new[1]
        x = image[None]
        if self.normalise_first:  # torchvision's order (ImagePreprocessor)
            x = (x - pre.pixel_mean) / pre.pixel_std
        x = F.interpolate(x, size=(_as_size(nh, 1), _as_size(nw, 1)), mode="bilinear", align_corners=False)
        if not self.normalise_first:
            x = (x - pre.pixel_mean) / pre.pixel_std
        d = self.divisor
        ph = (nh + d - 1) // d * d - nh
        pw = (nw + d - 1) // d * d - nw
        x = F.pad(x, (0, _as_size(pw), 0, _as_size(ph)))
        return x, new, scale

    @staticmethod
    def anchors(gen: nn.Module, features: Tensor, padded: Tensor) -> Tensor:
        """One level's anchors for the feature map's own (dynamic) size: [fh * fw * A, 4] float32, as the
        generator's grid_anchors (a fixed stride) or, with torchvision's placement (grid_anchors_with_stride),
        strides of padded size // feature size. padded: the padded batch [1, 3, Hp, Wp]."""
        fh, fw = features.shape[-2], features.shape[-1]
        if hasattr(gen, "grid_anchors_with_stride"):
            stride = (_shape(padded, (2, 3)) // _shape(features, (2, 3))).to(torch.float32)
            sy, sx = stride[0], stride[1]
        else:
            sy = sx = torch.tensor(float(gen.stride))
        xs = torch.arange(fw, dtype=torch.float32, device=features.device) * sx
        ys = torch.arange(fh, dtype=torch.float32, device=features.device) * sy
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
        # whole and half pixels below 2**24: exact in float32, equal to the eager float64 sum cast to float32
        base = gen.base_anchors.to(device=features.device, dtype=torch.float32)
        return (shifts + base[None]).reshape(-1, 4)

    # -- RPN -------------------------------------------------------------------------------------------------------
    def proposals(self, levels: List[Tensor], padded: Tensor, size: Tensor, scale: Tensor) -> Tensor:
        """RegionProposalNetwork.generate_proposals (test settings) for one image: [P, 4] xyxy, resized pixels.

        Per level: head, anchors, top-k by objectness; then decode, clip, drop small, NMS per level, top-k."""
        rpn = self.model.rpn
        boxes_l, scores_l, level_l = [], [], []
        for lvl, (gen, f) in enumerate(zip(self.generators, levels)):
            logits, deltas = rpn.head(f)
            logits, deltas = logits[0], deltas[0]
            anchors = self.anchors(gen, f, padded)
            top, idx = logits.topk(_top_n(logits, self.pre_nms_top_n))
            boxes_l.append(rpn.box_coder.decode(deltas[idx], anchors[idx]))
            scores_l.append(torch.sigmoid(top) if self.rpn_sigmoid else top)
            level_l.append(torch.full_like(idx, lvl))
        boxes, scores = torch.cat(boxes_l), torch.cat(scores_l)
        boxes = _clip(boxes, size)
        min_size = torch.tensor(self.rpn_min_size, dtype=torch.float32)
        if self.rpn_min_size_scaled:
            min_size = min_size * scale.to(torch.float32)
        keep = box_sides_at_least(boxes, min_size)
        boxes, scores = boxes[keep], scores[keep]
        kept = _batched_nms(boxes, scores, torch.cat(level_l)[keep], self.rpn_nms_thresh, len(levels))
        return boxes[kept[: self.post_nms_top_n]]

    # -- RoI heads -------------------------------------------------------------------------------------------------
    def pool(self, features, rois: Tensor) -> Tensor:
        """The RoI heads' pooler on [R, 5] rois; MultiScaleRoIAlign's per-level loop without its `if any RoI`
        (every level is pooled, possibly on no RoI), so the graph holds every level."""
        pooler = self.model.roi_heads.pooler
        if not hasattr(pooler, "level_names"):
            return pooler(features, rois)
        feats = [features[n] for n in pooler.level_names]
        if len(feats) == 1:
            return pooler(features, rois)
        from detection.ops import roi_align

        # map_roi_levels (FPN eq. 1, torchvision's LevelMapper)
        b = rois[:, 1:]
        s = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        k = torch.floor(pooler.canonical_level + torch.log2(s / pooler.canonical_scale)
                        + torch.tensor(1e-6, dtype=s.dtype))
        levels = torch.clamp(k, min=pooler.k_min, max=pooler.k_max).to(torch.int64) - pooler.k_min
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1]) + tuple(pooler.output_size))
        for lvl, (feat, sc) in enumerate(zip(feats, pooler.scales)):
            idx = torch.where(levels == lvl)[0]
            pooled = roi_align(feat, rois[idx], pooler.output_size, sc, pooler.sampling_ratio, pooler.aligned)
            # a scatter (ScatterElements) rather than out[idx] = ...: the exporter's index_put fixes the shape
            # of the values it saw when the example had one RoI at a level
            out = out.scatter(0, idx.view(-1, 1, 1, 1).expand_as(pooled), pooled.to(out.dtype))
        return out

    def detections(self, features, proposals: Tensor, size: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """RoIHeads.detections for one image: boxes [M, 4] (resized pixels), scores [M], labels [M]."""
        heads = self.model.roi_heads
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        x = heads.box_head(self.pool(features, rois))
        cls_logits, box_deltas = heads.cls_score(x), heads.bbox_pred(x)
        c = heads.num_classes
        k = c - 1
        scores = F.softmax(cls_logits, dim=1)[:, 1:]  # [R, K]
        deltas = box_deltas.reshape(-1, box_deltas.shape[1] // 4, 4)
        deltas = deltas.expand(-1, k, 4) if heads.class_agnostic else deltas[:, 1:]
        boxes = _clip(heads.box_coder.decode(deltas, rois[:, None, 1:]), size)
        labels = torch.arange(1, c, device=scores.device)[None].expand_as(scores)
        keep = (scores > heads.score_thresh) & box_sides_at_least(boxes, self.min_box_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        kept = _batched_nms(boxes, scores, labels - 1, heads.nms_thresh, k)[: heads.detections_per_image]
        reported = getattr(heads, "reported_classes", None)
        if reported is not None:  # placeholder classes dropped after the top-k, as the RoI heads do
            kept = kept[reported[labels[kept]]]
        return boxes[kept], scores[kept], labels[kept]

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x, size, scale = self.preprocess(image)
        features = self.model.backbone(x)
        levels = list(features.values()) if isinstance(features, dict) else [features]
        proposals = self.proposals(levels, x, size, scale)
        boxes, scores, labels = self.detections(features, proposals, size)
        # ImagePreprocessor.postprocess: back to the input's pixels, clipped to it
        orig = _shape(image, (1, 2))
        ratio = (orig.to(torch.float32) / size.to(torch.float32)).flip(0).repeat(2)  # (w, h, w, h)
        hi = orig.flip(0).repeat(2).to(torch.float32)
        boxes = torch.minimum((boxes * ratio).clamp(min=0), hi)
        return boxes, scores, labels


def _clip(boxes: Tensor, size: Tensor) -> Tensor:
    """clip_boxes for one image: boxes [..., 4] to [0, w] x [0, h] of size int64 [2] (h, w)."""
    hi = size.flip(0).repeat(2).to(boxes.dtype)  # (w, h, w, h)
    return torch.minimum(boxes.clamp(min=0), hi)


def _batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou: float, num_groups: int) -> Tensor:
    """detection.ops.batched_nms for groups in 0..num_groups-1, with a loop the graph can hold: exactly one NMS
    per group, four groups per `nms` call mirrored into the four quadrants (x -> -x and/or y -> -y: exact, every
    IoU unchanged, boxes of different quadrants never intersect), one call per four groups whether or not they
    have boxes. Boxes must be >= 0 (they are clipped) and iou >= 0, as batched_nms's quadrant rule asks.
    Returns indices by decreasing score, equal scores by lower index: batched_nms's order."""
    if num_groups == 1:
        return nms(boxes, scores, iou)
    index = torch.arange(scores.shape[0], device=scores.device)
    kept = []
    for chunk in range((num_groups + 3) // 4):
        sel = torch.where(groups // 4 == chunk)[0]
        b, quadrant = boxes[sel], groups[sel] % 4
        x = torch.where((quadrant % 2 == 1)[:, None], -b[:, 0::2].flip(1), b[:, 0::2])  # mirrored: -x2, -x1
        y = torch.where((quadrant >= 2)[:, None], -b[:, 1::2].flip(1), b[:, 1::2])
        mirrored = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
        kept.append(index[sel][nms(mirrored, scores[sel], iou)])
    keep = torch.cat(kept).sort().values  # index order, so that equal scores resolve by index
    return keep[_descending(scores[keep])]


def _descending(scores: Tensor) -> Tensor:
    """Indices sorting scores [N] by decreasing value, equal values by lower index (a stable sort). In the ONNX
    graph a TopK over all N, whose ties are broken by the lower index (the ONNX rule)."""
    if _tracing():
        return scores.topk(torch._shape_as_tensor(scores)[0])[1]
    return torch.sort(scores, descending=True, stable=True).indices


class ClassifierExport(nn.Module):
    """One image through an ImageClassifier: [3, H, W] float32 RGB 0..1 -> (logits [K], probabilities [K]).

    The resize to S x S (CLS.RESIZE 'squash' or 'center_crop', bilinear with antialiasing) is in the graph, as
    two weight matrices computed from the input size (`_aa_weights`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        m = self.model
        x = _resize_square(image[None], m.image_size, m.resize_mode)
        x = (x - m.pixel_mean) / m.pixel_std
        logits = m.logits(m.backbone.features_for_classification(x))[0]
        return logits, logits.float().softmax(dim=0)


def _aa_weights(in_size: Tensor, out_size, device) -> Tensor:
    """[out, in] weights of PyTorch's antialiased bilinear resize along one axis (interpolate antialias=True,
    align_corners=False): a triangle filter widened by the downscale factor, each row normalised to sum 1.

    As matrices the resize is plain MatMuls in the graph; ONNX Resize-18's antialias differs from PyTorch's by
    up to ~1e-3 on strong downscales."""
    scale = in_size.to(torch.float32) / torch.as_tensor(out_size).to(torch.float32)
    inv = 1.0 / torch.clamp(scale, min=1.0)
    center = scale * (torch.arange(_as_size(torch.as_tensor(out_size)), device=device).to(torch.float32) + 0.5)
    pos = torch.arange(_as_size(in_size), device=device).to(torch.float32) + 0.5
    w = (1.0 - ((pos[None, :] - center[:, None]) * inv).abs()).clamp(min=0.0)
    return w / w.sum(dim=1, keepdim=True)


def _resize_aa(x: Tensor, out_h, out_w) -> Tensor:
    """[1, C, H, W] -> [1, C, out_h, out_w], antialiased bilinear (out sizes: ints or 0-d int64 tensors)."""
    hw = _shape(x, (2, 3))
    wh = _aa_weights(hw[0], out_h, x.device)
    ww = _aa_weights(hw[1], out_w, x.device)
    return torch.matmul(torch.matmul(wh, x), ww.t())


def _resize_square(x: Tensor, size: int, mode: str) -> Tensor:
    """detection/ops/resize.py's resize_square on [1, 3, H, W] with the sizes computed in the graph."""
    if mode == "squash":
        return _resize_aa(x, size, size)
    from detection.ops.resize import CROP_FRACTION

    side = float(round(size / CROP_FRACTION))
    hw = _shape(x, (2, 3)).to(torch.float64)
    short, long = hw.min(), hw.max()
    new_long = torch.floor(side * long / short)  # int(side * long / short)
    side_t = torch.full_like(new_long, side)
    new = torch.where(hw[0] <= hw[1], torch.stack([side_t, new_long]), torch.stack([new_long, side_t]))
    # an image already S x S is returned as it is: resized to its own size, not quantised, cropped at 0
    as_is = (hw == float(size)).all()
    new = torch.where(as_is, hw, new).to(torch.int64)
    resized = _resize_aa(x * 255.0, new[0], new[1])
    x = torch.where(as_is, resized / 255.0, resized.round().clamp(0.0, 255.0) / 255.0)  # 8-bit values
    y0 = torch.round((new[0] - size).to(torch.float64) / 2.0).to(torch.int64)
    x0 = torch.round((new[1] - size).to(torch.float64) / 2.0).to(torch.int64)
    return _crop(x, y0, x0, size)


def _crop(x: Tensor, y0: Tensor, x0: Tensor, size: int) -> Tensor:
    rows = torch.arange(size, device=x.device) + y0
    cols = torch.arange(size, device=x.device) + x0
    return x.index_select(2, rows).index_select(3, cols)


def export_module(model: nn.Module) -> nn.Module:
    """The single-image module to export for `model`: DetectorExport (a FasterRCNN) or ClassifierExport."""
    from detection.modeling.classifier import ImageClassifier
    from detection.modeling.faster_rcnn import FasterRCNN

    if isinstance(model, FasterRCNN):
        return DetectorExport(model).eval()
    if isinstance(model, ImageClassifier):
        return ClassifierExport(model).eval()
    raise TypeError(f"no export for a {type(model).__name__} (FasterRCNN and ImageClassifier export)")


#: input and output names of the exported files, by module
INPUT_NAMES = ["image"]
OUTPUT_NAMES = {DetectorExport: ["boxes", "scores", "labels"], ClassifierExport: ["logits", "probabilities"]}
