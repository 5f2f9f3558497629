"""Deployment: ONNX and torch.export files that serve every image size, and the fast inference path.

    from detection.export import export_onnx, export_program, optimize_for_inference
    export_onnx(model, "model.onnx", example, class_names)       # onnx.py (onnx/onnxruntime imported lazily)
    save_program(export_program(model, example), "model.pt2")    # torch_export.py
    model = optimize_for_inference(model)                        # fast.py: BatchNorm folded, channels_last

What is exported is the eager model itself on one image (traceable.py: `model([image])[0]` as a tuple; the modules
keep their sizes symbolic under a tracer, detection/ops/shapes.py), so resize, normalisation, RPN, NMS and
post-processing are inside; symbolics.py maps the toolkit's ops to standard ONNX operators; compare.py checks an
export against the PyTorch model. tools/export_model.py is the command line.
"""
from detection.export.compare import compare_detections, compare_probabilities
from detection.export.fast import optimize_for_inference
from detection.export.fold_bn import fold_batchnorm
from detection.export.onnx import export_onnx, onnx_metadata, onnx_session, run_onnx
from detection.export.torch_export import export_program, load_program, save_program
from detection.export.traceable import ClassifierExport, DetectorExport, export_module

__all__ = ["compare_detections", "compare_probabilities", "optimize_for_inference", "fold_batchnorm",
           "export_onnx", "onnx_metadata", "onnx_session", "run_onnx", "export_program", "load_program",
           "save_program", "ClassifierExport", "DetectorExport", "export_module"]
