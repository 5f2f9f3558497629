"""torchvision detector weights in this toolkit's Faster R-CNN: file names, lookup and the state-dict key map.

A state dict saved from ``torchvision.models.detection.fasterrcnn_resnet50_fpn`` or ``_v2``
(``torch.save(model.state_dict(), f)``, or torchvision's own download) loads into the model of
``configs/faster_rcnn_r50_fpn_coco.yaml`` / ``_v2_coco.yaml``: our FPN backbone (`body`, `fpn`), RPN head and box
heads use torchvision's module names, so the map is short:

    roi_heads.box_predictor.{cls_score,bbox_pred}.*  ->  roi_heads.{cls_score,bbox_pred}.*
    rpn.head.conv.0.0.*  <->  rpn.head.conv.*   (torchvision's RPNHead v2 layout vs a one-conv head; torchvision's
                                                  own COCO v1 file still has the old `rpn.head.conv.*` names)
    everything else: the same name (backbone.body.*, backbone.fpn.*, rpn.head.*, roi_heads.box_head.*)

`resolve_detector_weights` finds torchvision's file names (``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``) in the
torch hub cache like the backbone files (never downloading) and checks the sha256 prefix in the name.
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

from torch import Tensor

__all__ = ["TORCHVISION_DETECTOR_FILES", "is_torchvision_detector_state", "map_torchvision_detector_state",
           "resolve_detector_weights"]

#: short name -> torchvision's file name (weights enum COCO_V1), looked for in the torch hub cache
TORCHVISION_DETECTOR_FILES = {
    "fasterrcnn_resnet50_fpn_coco": "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
    "fasterrcnn_resnet50_fpn_v2_coco": "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
}

_PREDICTOR = "roi_heads.box_predictor."


def is_torchvision_detector_state(state: Mapping[str, object]) -> bool:
    """Whether a state dict is a torchvision GeneralizedRCNN's (its box predictor and FPN body keys)."""
    keys = list(state)
    return any(k.startswith(_PREDICTOR) for k in keys) and any(k.startswith("backbone.body.") for k in keys)


def map_torchvision_detector_state(state: Mapping[str, Tensor], own_keys) -> Dict[str, Tensor]:
    """torchvision detector state dict -> this toolkit's names, given the target model's state-dict keys."""
    own = set(own_keys)
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        new = "roi_heads." + key[len(_PREDICTOR):] if key.startswith(_PREDICTOR) else key
        if new.startswith("rpn.head.conv.") and new not in own:
            rest = new[len("rpn.head.conv."):]
            if rest.startswith("0.0.") and "rpn.head.conv." + rest[4:] in own:
                new = "rpn.head.conv." + rest[4:]  # torchvision v2-layout one-conv head -> Conv2d `conv`
            elif "rpn.head.conv.0.0." + rest in own:
                new = "rpn.head.conv.0.0." + rest  # torchvision's old one-conv names -> Sequential layout
        out[new] = value
    return out


def resolve_detector_weights(weights: str) -> Optional[str]:
    """The file `weights` names: an existing path; or one of torchvision's detector file names (or their short
    names, TORCHVISION_DETECTOR_FILES) found in the torch hub cache, hash-checked. None when neither.

    Raises WeightsNotFoundError for a known torchvision name that is not in the cache (listing where to put it),
    WeightsError for a hash mismatch."""
    from detection.modeling.backbone.weights import WeightsNotFoundError, search_locations, verify_file_hash

    name = os.path.basename(weights)
    file_name = TORCHVISION_DETECTOR_FILES.get(name, name if name in TORCHVISION_DETECTOR_FILES.values() else None)
    if os.path.isfile(weights):
        if file_name is not None:
            verify_file_hash(weights)
        return weights
    if file_name is None:
        return None
    places = search_locations(file_name)
    for p in places:
        if os.path.isfile(p):
            verify_file_hash(p)
            return p
    raise WeightsNotFoundError(f"torchvision detector weights {file_name} not found (never downloaded): put the "
                               f"file in one of\n  " + "\n  ".join(places))
