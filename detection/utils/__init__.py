"""Utilities: logging (``setup_logger``), seeding and RNG states (``seed_everything``, ``get_rng_states`` ...),
drawing (``draw_detections`` ...), one model output as a picture or a JSON record (outputs.py), model summaries,
files and folders written atomically (atomic_io.py, atomic_dir.py).

The bottom layer with ``detection.config`` and ``detection.registry``: must not import any other detection package.

Names are imported lazily, so ``import detection.utils.logger`` does not pull in OpenCV or torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "setup_logger": "logger",
    "seed_everything": "seed",
    "derive_seed": "seed",
    "worker_init_fn": "seed",
    "seed_worker": "seed",
    "make_generator": "seed",
    "get_rng_states": "seed",
    "set_rng_states": "seed",
    "atomic_torch_save": "atomic_io",
    "atomic_write_text": "atomic_io",
    "write_json": "atomic_io",
    "OutputWriteError": "atomic_io",
    "draw_output": "outputs",
    "output_to_json": "outputs",
    "rank_and_world_size": "dist",
    "shared_random_seed": "dist",
    "PALETTE": "visualize",
    "class_color": "visualize",
    "to_rgb_uint8": "visualize",
    "draw_detections": "visualize",
    "draw_classification": "visualize",
    "make_contact_sheet": "visualize",
    "contact_sheet_layout": "visualize",
    "save_image": "visualize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
