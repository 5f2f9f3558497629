"""Python face of the compiled ops (a drop-in for the matching torchvision.ops functions, tested against
torchvision's own op tests: docs/architecture.md), Soft-NMS, box utilities, the one image resize (resize.py)
that the models and the classification loader share, and the size helpers that keep sizes symbolic under a tracer
(shapes.py). `import detection.ops` loads the compiled ops and no model, data or engine code.

Owns stateless tensor operations. Must not import ``detection.modeling``, ``detection.data``,
``detection.evaluation`` or ``detection.engine``.

`DETECTION_OPS=torchvision` selects torchvision.ops instead of the compiled `detection._C`.
"""
from detection.ops._backend import BACKEND
from detection.ops.async_errors import check_async_errors
from detection.ops.boxes import box_area, box_iou
from detection.ops.errors import BoxShapeError, BoxTypeError, RoiDtypeError, RoiInputError
from detection.ops.nms import batched_nms, nms
from detection.ops.roi_align import RoIAlign, roi_align
from detection.ops.roi_pool import RoIPool, roi_pool
from detection.ops.soft_nms import SOFT_NMS_METHODS, batched_soft_nms, soft_nms

__all__ = ["BACKEND", "box_area", "box_iou", "nms", "batched_nms", "soft_nms", "batched_soft_nms", "SOFT_NMS_METHODS",
           "roi_align", "RoIAlign", "roi_pool", "RoIPool", "check_async_errors", "BoxShapeError", "BoxTypeError",
           "RoiInputError", "RoiDtypeError"]
