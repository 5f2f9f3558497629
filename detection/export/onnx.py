"""ONNX export: one file for every image size, standard operators only, run by onnxruntime's CPU provider.

    path = export_onnx(model, "model.onnx", example, class_names)     # model: eval-mode FasterRCNN / ImageClassifier
    session = onnx_session("model.onnx")
    out = run_onnx(session, image)          # image [3, H, W] float RGB 0..1 -> {"boxes", "scores", "labels"}
    meta = onnx_metadata("model.onnx")      # {"class_names": [...], "family": ..., ...}

Graph: input `image` float32 [3, height, width] (RGB, 0..1, both sides dynamic). Detector outputs: `boxes`
float32 [N, 4] xyxy in the input's pixels, `scores` float32 [N], `labels` int64 [N] in 1..K; classifier outputs:
`logits` and `probabilities` float32 [K]. Resize, normalisation, RPN, NMS and post-processing are inside
(detection/export/traceable.py); the toolkit's ops become NonMaxSuppression / RoiAlign / MaxRoiPool
(symbolics.py). The exporter is torch.onnx's TorchScript-based one (`dynamo=False`): the torch.export-based one
needs onnxscript. onnx and onnxruntime are imported only here, with an error saying what to install.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from detection.export.symbolics import OPSET, register_onnx_symbolics
from detection.export.traceable import INPUT_NAMES, OUTPUT_NAMES, export_module

__all__ = ["ONNX_PACKAGES", "require", "export_onnx", "onnx_session", "run_onnx", "onnx_metadata",
           "soft_nms_refusal"]

#: the pinned versions (requirements.txt)
ONNX_PACKAGES = {"onnx": "onnx==1.23.2", "onnxruntime": "onnxruntime==1.32.0"}


def require(name: str):
    """Import `onnx` or `onnxruntime`, or raise ImportError saying what to install."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the '{name}' package, which is not installed: pip install "
                          f"{ONNX_PACKAGES[name]} (pinned in requirements.txt)") from exc


def soft_nms_refusal(method: str) -> str:
    """The one-line reason an ONNX export of a detector with Soft-NMS (TEST.NMS_METHOD `method`) is refused."""
    return (f"TEST.NMS_METHOD is {method!r}: ONNX has no Soft-NMS operator, so the exported graph could only apply "
            f"hard NMS, which would change the detections. Export with --set TEST.NMS_METHOD hard (hard NMS in the "
            f"graph), or to torch.export (--format torch-export), which keeps Soft-NMS")


def export_onnx(model: nn.Module, path: str, example: torch.Tensor, class_names: Sequence[str] = (),
                metadata: Optional[Dict[str, str]] = None, opset: int = OPSET) -> str:
    """Trace `model` (eval mode) on `example` [3, H, W] and write the ONNX file at `path` (see the module
    docstring), with class_names (JSON) and `metadata` in the model's metadata_props. Returns path. A detector
    whose final NMS is Soft-NMS is refused (ValueError naming TEST.NMS_METHOD) before tracing."""
    method = getattr(getattr(model, "roi_heads", None), "nms_method", "hard")
    if method != "hard":
        raise ValueError(soft_nms_refusal(method))
    onnx = require("onnx")
    register_onnx_symbolics()
    net = export_module(model)
    outputs = OUTPUT_NAMES[type(net)]
    dynamic = {"image": {1: "height", 2: "width"}}
    if outputs[0] == "boxes":
        dynamic.update({name: {0: "detections"} for name in outputs})
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(net, (example.float(),), path, dynamo=False, input_names=INPUT_NAMES,
                          output_names=outputs, dynamic_axes=dynamic, opset_version=opset,
                          do_constant_folding=True)
    proto = onnx.load(path)
    meta = {"class_names": json.dumps(list(class_names)), "family": "detector" if outputs[0] == "boxes"
            else "classifier", "input": "image: float32 [3, height, width] RGB in 0..1",
            "outputs": ", ".join(outputs), **(metadata or {})}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    proto.producer_name = "detection"
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def onnx_session(path: str, threads: int = 0):
    """An onnxruntime InferenceSession on the CPU provider (threads 0: onnxruntime's default)."""
    ort = require("onnxruntime")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(session, image: torch.Tensor) -> Dict[str, "object"]:
    """{output name: numpy array} for one [3, H, W] float RGB 0..1 image."""
    x = image.detach().cpu().float().contiguous().numpy()
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAMES[0]: x})))


def onnx_metadata(path_or_session) -> Dict:
    """The exported file's metadata, class_names decoded."""
    if isinstance(path_or_session, (str, os.PathLike)):
        onnx = require("onnx")
        props = {p.key: p.value for p in onnx.load(os.fspath(path_or_session), load_external_data=False)
                 .metadata_props}
    else:
        props = dict(path_or_session.get_modelmeta().custom_metadata_map)
    if "class_names" in props:
        props["class_names"] = json.loads(props["class_names"])
    return props
