"""Use a trained model from Python: one object from a run folder (or a config and weights), called on images.

    import detection
    model = detection.load("outputs/quickstart")                  # config.yaml + the last checkpoint
    model = detection.load(cfg="configs/x.yaml", weights="model_final.pth", device="cpu", fast=True)
    model = detection.load(weights="outputs/quickstart/model_final.pth")   # the config saved in the checkpoint
    result = model("photo.jpg")                                   # see detection/image_input.py for inputs
    results = model(["a.jpg", "b.jpg"], batch_size=8)             # a list gives a list
    for result in model.video("clip.mp4", batch_size=8):          # a generator over the frames (or a camera: 0)
        result.frame_index, result.boxes, result.draw()
    result.boxes, result.scores, result.labels, result.class_names
    print(model.summary())

The Predictor builds its model and its test-time-augmentation wrapper (detection/modeling/tta.py, from the
config's TEST.* keys, as tools/test_net.py does) once, and calls them: its predictions are the ones test_net
scores. A list is run in batches of images of the same size (in input order), so a result never depends on which
other images shared its batch. Results are plain data (detection/results.py). fast=True: detection/export/fast.py.
"""
from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional, Sequence, Union

import torch

__all__ = ["load", "Predictor"]


class _Text(str):
    """A string that shows as itself in a notebook (model.summary())."""

    def __repr__(self) -> str:
        return str(self)


def _config_from_checkpoint(weights: str, overrides: Sequence[str]):
    import yaml

    from detection.config import ConfigError, get_default_config, merge_from_dict, merge_from_list
    from detection.config.loading import RESOLVED_KEY
    from detection.engine.checkpoint import load_checkpoint_file

    state = load_checkpoint_file(weights)
    text = state.get("config") if isinstance(state, dict) else None
    if not text:
        raise ConfigError(f"{weights}: the checkpoint holds no config; pass cfg= (the YAML it was trained with)")
    data = yaml.safe_load(text) or {}
    resolved = data.pop(RESOLVED_KEY, None)  # what train_net resolved from the data (dump_config)
    cfg = merge_from_dict(get_default_config(), data, source=f"{weights} (saved config)")
    if resolved:
        cfg[RESOLVED_KEY] = resolved
    return merge_from_list(cfg, list(overrides))


def _run_folder(run_dir: str):
    """(config.yaml, checkpoint) of a train_net output folder; FileNotFoundError saying what is missing."""
    from detection.engine.checkpoint import read_last_checkpoint

    if not os.path.isdir(run_dir):
        hint = " (a file: pass it as cfg= or weights=)" if os.path.isfile(run_dir) else ""
        raise FileNotFoundError(f"run folder {run_dir}: no such folder{hint}")
    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"run folder {run_dir} has no config.yaml (written by tools/train_net.py); pass "
                                f"cfg= and weights= instead")
    ckpt = read_last_checkpoint(run_dir)
    if ckpt is None and os.path.isfile(os.path.join(run_dir, "model_final.pth")):
        ckpt = os.path.join(run_dir, "model_final.pth")
    return cfg_path, ckpt


def load(run_dir: Optional[str] = None, *, cfg: Any = None, weights: Optional[str] = None,
         device: str = "cpu", fast: bool = False, overrides: Sequence[str] = ()) -> "Predictor":
    """A Predictor from a run folder, or from `cfg` (a YAML path or a mapping of config keys) and `weights`.

    run_dir: a tools/train_net.py output folder (its config.yaml and last checkpoint); weights= overrides the
        checkpoint. cfg: a YAML file, or a mapping merged over the defaults like one ({"MODEL": {...}}, dotted
        keys, or a config detection.config.load_config returned). cfg without weights: OUTPUT_DIR's last
        checkpoint, or none for a model complete without training (an ImageNet classifier). weights alone: the
        config saved inside the checkpoint. A checkpoint's stored class names must equal the config's class list.
    device: 'cpu', 'cuda', 'cuda:N' or 'auto'. fast: fold BatchNorm, channels_last, inference_mode.
    overrides: KEY VALUE pairs as tools' --set (e.g. ("TEST.SCORE_THRESH", "0.3")).
    Missing folders, configs or checkpoints raise FileNotFoundError naming them.
    """
    from detection.config import load_config

    overrides = [str(v) for v in overrides]
    if len(overrides) % 2:
        raise ValueError(f"overrides take KEY VALUE pairs; got an odd number of items: {overrides}")
    if run_dir is not None:
        if cfg is not None:
            raise ValueError("pass either a run folder or cfg=, not both")
        cfg_path, ckpt = _run_folder(os.fspath(run_dir))
        weights = weights or ckpt
        if weights is None:
            raise FileNotFoundError(f"run folder {run_dir} has no checkpoint (no last_checkpoint, no "
                                    f"model_final.pth): train it with tools/train_net.py, or pass weights=")
        config = load_config(cfg_path, overrides)
    elif cfg is None:
        if weights is None:
            raise ValueError("detection.load needs a run folder, cfg= or weights=")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights {weights}: no such file")
        config = _config_from_checkpoint(weights, overrides)
    elif isinstance(cfg, (str, os.PathLike)):
        if not os.path.isfile(cfg):
            raise FileNotFoundError(f"cfg {cfg}: no such file")
        config = load_config(os.fspath(cfg), overrides)
    elif isinstance(cfg, Mapping):  # {"MODEL": {...}}, dotted keys, or a loaded config: merged over the defaults
        config = load_config(cfg, overrides)
    else:
        raise TypeError(f"cfg= takes a YAML file path, a mapping of config keys (merged over the defaults like a "
                        f"YAML file, e.g. {{'MODEL': {{'BACKBONE': {{'NAME': 'resnet50'}}}}}}) or a config from "
                        f"detection.config.load_config; got {type(cfg).__name__}")
    return Predictor.from_config(config, weights=weights, device=device, fast=fast)


class Predictor:
    """A model in eval mode with its config, task and class names; call it on one image or a list.

    Build with `detection.load(...)` or `Predictor.from_config(cfg, weights, device, fast)`.
    Attributes: model (nn.Module), cfg, task, class_names (labels 1..K of a detector, 0..K-1 of a classifier),
    device, fast, weights (the checkpoint path or None), runner (what a call runs: the model, or its
    test-time-augmentation wrapper under TEST.SCALES / TEST.FLIP / TEST.TEN_CROP).
    """

    def __init__(self, model: torch.nn.Module, cfg, task, class_names: Sequence[str], device: torch.device,
                 fast: bool = False, weights: Optional[str] = None):
        from detection.modeling.tta import build_tta

        self.model, self.cfg, self.task = model.eval(), cfg, task
        self.runner = build_tta(cfg, self.model)
        self.class_names = list(class_names)
        self.device, self.fast, self.weights = device, fast, weights

    @classmethod
    def from_config(cls, cfg, weights: Optional[str] = None, device: Union[str, torch.device, None] = "cpu",
                    fast: bool = False) -> "Predictor":
        """Build the model of `cfg`, load `weights` (None: OUTPUT_DIR's last checkpoint, or none for a model
        complete without training), move it to `device` and, with `fast`, optimise it for inference."""
        from detection.engine.checkpoint import read_last_checkpoint
        from detection.engine.launch import load_inference_model, resolve_device
        from detection.engine.tasks import get_task

        task = get_task(cfg)
        if weights is not None and not os.path.isfile(weights):
            raise FileNotFoundError(f"weights {weights}: no such file")
        if weights is None:
            weights = read_last_checkpoint(cfg.OUTPUT_DIR)
            if weights is None and task.needs_weights(cfg):
                raise FileNotFoundError(f"no weights= given and no checkpoint in OUTPUT_DIR {cfg.OUTPUT_DIR}: pass "
                                        f"weights= (e.g. {os.path.join(cfg.OUTPUT_DIR, 'model_final.pth')})")
        dev = device if isinstance(device, torch.device) else resolve_device(device or cfg.DEVICE)
        model, names = load_inference_model(task, cfg, weights, dev)
        if fast:
            from detection.export.fast import optimize_for_inference

            model = optimize_for_inference(model, dev)
        return cls(model, cfg, task, names, dev, fast=fast, weights=weights)

    # -- calling --------------------------------------------------------------------------------------------------
    def _context(self):
        return torch.inference_mode() if self.fast else torch.no_grad()

    def predict_tensors(self, images: List[torch.Tensor]) -> List[dict]:
        """The model contract's outputs (CPU tensors) of [3, H, W] float RGB 0..1 images, as one batch."""
        with self._context():
            outputs = self.runner([im.to(self.device) for im in images])
        return [{k: v.detach().cpu() for k, v in out.items()} for out in outputs]

    def __call__(self, inputs: Any, batch_size: int = 1):
        """A result for one image, or a list of results for a list (or tuple) of images.

        batch_size: images per forward pass; only images of the same size share a pass."""
        from detection.image_input import as_model_input
        from detection.results import make_result

        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        converted = [as_model_input(x, "input" if single else f"input {i}") for i, x in enumerate(items)]
        groups: dict = {}
        for i, (_, tensor) in enumerate(converted):
            groups.setdefault(tuple(tensor.shape), []).append(i)
        outputs: List[Optional[dict]] = [None] * len(items)
        for indices in groups.values():
            for start in range(0, len(indices), int(batch_size)):
                chunk = indices[start:start + int(batch_size)]
                for i, out in zip(chunk, self.predict_tensors([converted[i][1] for i in chunk])):
                    outputs[i] = out
        results = [make_result(out, converted[i][0], self.class_names) for i, out in enumerate(outputs)]
        return results[0] if single else results

    def video(self, source, batch_size: int = 4, max_frames: Optional[int] = None):
        """A generator of one result per frame of a video file or camera index (detection/video_io.py), in order;
        frames go through the model `batch_size` at a time. Each result has `frame_index` and `image` (the frame,
        uint8 RGB); `result.draw()` is the annotated frame. max_frames: stop after that many frames."""
        from detection.results import make_result
        from detection.video_io import VideoReader

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with VideoReader(source) as reader:
            index, frames = 0, []
            for frame in reader:
                frames.append(frame)
                last = max_frames is not None and index + len(frames) >= max_frames
                if len(frames) == int(batch_size) or last:
                    yield from self._frame_results(frames, index, make_result)
                    index += len(frames)
                    frames = []
                    if last:
                        return
            yield from self._frame_results(frames, index, make_result)

    def _frame_results(self, frames, first_index: int, make_result):
        if not frames:
            return
        tensors = [torch.from_numpy(f).permute(2, 0, 1).float().div_(255.0) for f in frames]
        for k, (frame, out) in enumerate(zip(frames, self.predict_tensors(tensors))):
            result = make_result(out, frame, self.class_names)
            result.frame_index = first_index + k
            yield result

    # -- describing -----------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """The layer table tools/train_net.py writes to model_summary.txt (one eval pass; print it)."""
        return _Text(self.task.summary(self.cfg, self.model))

    def __repr__(self) -> str:
        return (f"Predictor({self.cfg.MODEL.META_ARCHITECTURE}, {self.cfg.MODEL.BACKBONE.NAME}, "
                f"{len(self.class_names)} classes, weights={self.weights}, device={self.device}, fast={self.fast})")
