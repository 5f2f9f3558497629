"""torch.export: an ExportedProgram (.pt2) with dynamic height and width, loadable in a fresh process.

    program = export_program(model, example)                  # model: eval-mode FasterRCNN / ImageClassifier
    save_program(program, "model.pt2", class_names, metadata)
    run, meta = load_program("model.pt2")                     # after `import detection` (registers the ops)
    boxes, scores, labels = run(image)                        # image [3, H, W] float RGB 0..1

The program is detection/export/traceable.py's single-image module: the same inputs and outputs as the ONNX
file. Sizes that depend on the data (the resized image, the NMS survivors) are unbacked symbolic integers, so no
size is specialised to the example. Metadata (class names, config) travel in the archive's extra files.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from detection.export.traceable import export_module

__all__ = ["export_program", "save_program", "load_program", "MAX_SIDE"]

#: the largest image side an exported program accepts
MAX_SIDE = 16384
_META = "detection.json"


def _without_batch_norm_ops(model: nn.Module) -> nn.Module:
    """`model`, or a copy with its F.batch_norm BatchNorms folded into their convs: the op checks whether its
    input is empty, a branch on the number of RoIs that torch.export cannot record (torchvision's x * scale + bias
    FrozenBatchNorm2d has no such check and is kept)."""
    import copy

    from detection.export.fold_bn import fold_batchnorm, uses_batch_norm_op

    if not any(uses_batch_norm_op(m) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    fold_batchnorm(model, only_batch_norm_ops=True)
    return model


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export.export of the single-image module of `model`, on `example` [3, H, W], H and W dynamic
    (F.batch_norm BatchNorms folded into their convolutions first, in a copy)."""
    net = export_module(_without_batch_norm_ops(model))
    height = torch.export.Dim("height", min=1, max=MAX_SIDE)
    width = torch.export.Dim("width", min=1, max=MAX_SIDE)
    with torch.no_grad():
        return torch.export.export(net, (example.float(),), dynamic_shapes={"image": {1: height, 2: width}})


def save_program(program: torch.export.ExportedProgram, path: str, class_names: Sequence[str] = (),
                 metadata: Optional[Dict[str, str]] = None) -> str:
    """torch.export.save with {"class_names": [...], **metadata} as JSON in the extra file detection.json."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {"class_names": list(class_names), **(metadata or {})}
    torch.export.save(program, path, extra_files={_META: json.dumps(meta)})
    return path


def load_program(path: str) -> Tuple[Callable, Dict]:
    """(callable module, metadata) of a saved program; importing `detection` first registers its ops."""
    import detection.ops  # noqa: F401  (torch.ops.detection.* must exist before the program is deserialised)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported program not found: {path}")
    extra = {_META: ""}
    program = torch.export.load(path, extra_files=extra)
    return program.module(), (json.loads(extra[_META]) if extra[_META] else {})
