"""What the Python API accepts as an image, converted to the model's input and to a picture to draw on.

    picture, tensor = as_model_input(x)     # uint8 [H, W, 3] RGB numpy, float32 [3, H, W] RGB 0..1 torch

Accepted (anything else is an `InputError` naming the input and what to pass instead):
- a path (str or os.PathLike): decoded by OpenCV (detection.data.image_io.read_image_rgb: turned upright by its
  EXIF orientation, grey replicated, alpha dropped, 16-bit scaled to 8 bits); a missing, undecodable or corrupt
  file is an ImageReadError naming it;
- a numpy array [H, W, 3] RGB (channels last), also [H, W] / [H, W, 1] grey (replicated to RGB) and
  [H, W, 4] RGBA (alpha dropped); dtype uint8 (0..255), uint16 (0..65535) or float (0..1);
- a PIL image of any mode (turned upright by its EXIF orientation like a path, converted with .convert("RGB");
  16-bit and 32-bit grey are scaled from 0..65535);
- a torch tensor [3, H, W] (the model contract) or [1, H, W] grey, float in 0..1 or uint8.
"""
from __future__ import annotations

import os
from typing import Any, Tuple

import numpy as np
import torch

__all__ = ["InputError", "as_model_input"]


class InputError(ValueError):
    """An input the API cannot turn into an RGB image; the message says what was given and what is expected."""


_EXPECTED = ("a path, an RGB uint8 [H, W, 3] numpy array (or [H, W] grey, [H, W, 4] RGBA; uint8, uint16 or "
             "float 0..1), a PIL image or a [3, H, W] float tensor in 0..1")


def _float_from_array(a: np.ndarray, what: str) -> np.ndarray:
    """A numpy image of any accepted dtype -> float32 in 0..1 (same layout)."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise InputError(f"{what}: the float image has NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{what}: a float image must hold values in 0..1, got {lo:g}..{hi:g} "
                             f"(pass a uint8 array for 0..255 values)")
        return a
    raise InputError(f"{what}: unsupported dtype {a.dtype} (expected uint8 0..255, uint16 0..65535 or float 0..1)")


def _from_array(a: np.ndarray, what: str) -> np.ndarray:
    """numpy image -> float32 [H, W, 3] in 0..1 (grey replicated, alpha dropped)."""
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        hint = (" (it looks channels-first: use array.transpose(1, 2, 0))"
                if a.ndim == 3 and a.shape[0] in (1, 3, 4) else "")
        raise InputError(f"{what}: expected an image array [H, W, 3] (or [H, W], [H, W, 1], [H, W, 4]), got "
                         f"shape {tuple(a.shape)}{hint}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what}: the image is empty (shape {tuple(a.shape)})")
    a = _float_from_array(a, what)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        a = a[..., :3]
    return a


def _from_pil(img, what: str) -> np.ndarray:
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)  # upright, as paths are read (detection.data.image_io)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG/TIFF (PIL reads some as 32-bit 'I')
        a = np.asarray(img).astype(np.float32)
        return _from_array(np.clip(a / 65535.0, 0.0, 1.0), what)
    if img.mode == "F":
        return _from_array(np.asarray(img), what)
    return _from_array(np.asarray(img.convert("RGB")), what)


def _from_tensor(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        hint = " (it looks channels-last: use tensor.permute(2, 0, 1))" if t.dim() == 3 and t.shape[-1] == 3 else ""
        raise InputError(f"{what}: expected a tensor [3, H, W] (or [1, H, W] grey), got shape "
                         f"{tuple(t.shape)}{hint}")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise InputError(f"{what}: the image is empty (shape {tuple(t.shape)})")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{what}: the tensor has NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{what}: a float tensor must hold values in 0..1, got {lo:g}..{hi:g}")
    else:
        raise InputError(f"{what}: unsupported tensor dtype {t.dtype} (expected float in 0..1 or uint8)")
    return t.expand(3, -1, -1) if t.shape[0] == 1 else t


def as_model_input(x: Any, what: str = "input") -> Tuple[np.ndarray, torch.Tensor]:
    """(uint8 [H, W, 3] RGB picture, float32 [3, H, W] RGB 0..1 tensor on x's device or the CPU) of one image.

    what: how errors name the input (e.g. "input 3" in a list)."""
    from detection.data.image_io import read_image_rgb

    if isinstance(x, (str, os.PathLike)):
        picture = read_image_rgb(os.fspath(x))
        return picture, torch.from_numpy(picture).permute(2, 0, 1).float().div_(255.0)
    if isinstance(x, torch.Tensor):
        t = _from_tensor(x.detach(), what)
        picture = (t.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(picture), t
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8 and x.ndim == 3 and x.shape[-1] == 3 and x.shape[0] and x.shape[1]:
            picture = np.ascontiguousarray(x)
            return picture, torch.from_numpy(picture.copy()).permute(2, 0, 1).float().div_(255.0)
        a = _from_array(x, what)
    elif type(x).__module__.startswith("PIL.") and hasattr(x, "mode"):
        a = _from_pil(x, what)
    else:
        raise InputError(f"{what}: unsupported input type {type(x).__name__}; expected {_EXPECTED}")
    picture = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    return picture, torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()
