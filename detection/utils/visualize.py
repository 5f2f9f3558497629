"""Pictures people look at: detections, classifier banners, contact sheets; all OpenCV, all RGB uint8.

Every function takes an RGB image (numpy uint8 [H, W, 3]; also accepted: [H, W] / [H, W, 1] grey, [H, W, 4]
(alpha dropped), float images in 0..1, torch tensors [3, H, W] as the model sees them) and returns a *new*
uint8 [H, W, 3] RGB array; the input is never modified. ``save_image`` converts to BGR only when writing.

Colours: class index ``k`` (0-based position in the class list) always gets ``class_color(k)``: a fixed palette of
20 distinct colours, then golden-ratio hues, so the same class has the same colour in every picture.
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ["PALETTE", "class_color", "to_rgb_uint8", "draw_detections", "draw_classification",
           "make_contact_sheet", "contact_sheet_layout", "save_image"]

# Sasha Trubetskoy's 20 distinct colours (RGB), most distinct first.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128), (250, 190, 212), (170, 110, 40),
    (220, 190, 255), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
    (128, 128, 128), (255, 250, 200),
)
_BACKGROUND_NAMES = ("__background__", "background", "__bg__")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(index: int) -> tuple:
    """The RGB colour of class ``index`` (0-based): deterministic, distinct for neighbouring indices."""
    index = int(index)
    if 0 <= index < len(PALETTE):
        return PALETTE[index]
    h = (abs(index) * 0.618033988749895) % 1.0
    rgb = cv2.cvtColor(np.array([[[h * 180.0, 200.0, 240.0]]], np.float32).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return tuple(int(v) for v in rgb[0, 0])


def to_rgb_uint8(image) -> np.ndarray:
    """A contiguous uint8 [H, W, 3] RGB copy of ``image`` (see the module docstring for what is accepted)."""
    if hasattr(image, "detach"):  # torch tensor, without importing torch
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.transpose(1, 2, 0)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an image [H, W, 3] (or [H, W], [H, W, 1|4], tensor [3, H, W]), "
                         f"got shape {image.shape}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating):
            image = np.nan_to_num(image.astype(np.float32), nan=0.0) * 255.0
            image = np.clip(np.round(image), 0, 255)
        elif np.issubdtype(image.dtype, np.bool_):
            image = image.astype(np.uint8) * 255
        else:
            image = np.clip(image, 0, 255)
        image = image.astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image).copy()


def _as_numpy(x, dtype=None) -> np.ndarray:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.astype(dtype) if dtype is not None else x


def _text_color(bg) -> tuple:
    r, g, b = (float(v) for v in bg[:3])
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _fit_text(text: str, max_width: int, scale: float, thickness: int, min_scale: float = 0.35) -> tuple:
    """Shrink the font (down to ``min_scale``), then cut the text with '..', until it fits ``max_width``."""
    (tw, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    if tw > max_width and scale > min_scale:
        scale = max(min_scale, scale * max_width / max(tw, 1))
    while text and cv2.getTextSize(text, _FONT, scale, thickness)[0][0] > max_width:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    return text, scale


def _line_height(scale: float, thickness: int) -> int:
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thickness)
    return th + base


def draw_detections(image_rgb, boxes, labels, scores=None, class_names: Optional[Sequence[str]] = None,
                    score_thresh: float = 0.0, colors=None, label_offset: Optional[int] = None,
                    min_side: int = 0) -> np.ndarray:
    """Draw boxes with a "name 0.93" tag in a filled box of the class colour; returns a new uint8 RGB image.

    image_rgb: uint8 [H, W, 3] RGB (see module docstring). boxes: [N, 4] xyxy absolute pixels (continuous,
    x2 = last column + 1), clipped to the image for drawing. labels: [N] ints. scores: [N] or None (ground
    truth: no score shown, nothing filtered). class_names: the dataset's class list; label ``l`` is
    ``class_names[l - label_offset]``. label_offset defaults to 1 (the detector contract: 0 is background,
    classes are 1..K), or 0 when ``class_names[0]`` is "__background__" (a list indexed by label directly); pass
    0 for classifier labels. Unknown labels are shown as "class <l>". score_thresh: boxes with a lower score
    are not drawn. colors: optional {class index: (r, g, b)} or a sequence indexed by class index; the
    default is ``class_color(class index)``; the class index is the position among the real classes, so a
    class has the same colour whether or not ``class_names`` starts with "__background__". Higher scores are
    drawn last (on top). min_side: scale a smaller image up (nearest neighbour, boxes with it) until its shorter
    side is at least this, so tags stay readable on tiny images; the default 0 keeps the input's size.
    """
    img = to_rgb_uint8(image_rgb)
    h, w = img.shape[:2]
    boxes = _as_numpy(boxes, np.float64).reshape(-1, 4)
    if min_side and min(h, w) < min_side:
        f = int(math.ceil(min_side / min(h, w)))
        img = cv2.resize(img, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
        h, w = img.shape[:2]
        boxes = boxes * f
    labels = _as_numpy(labels).reshape(-1).astype(np.int64)
    scores = None if scores is None else _as_numpy(scores, np.float64).reshape(-1)
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"boxes ({len(boxes)}), labels ({len(labels)}) and scores "
                         f"({'-' if scores is None else len(scores)}) must have the same length")
    has_bg = bool(class_names) and str(class_names[0]) in _BACKGROUND_NAMES
    if label_offset is None:
        label_offset = 0 if has_bg else 1

    size = math.sqrt(h * w)
    thickness = max(1, int(round(size / 160)))
    font_scale = min(1.6, max(0.4, size / 600))
    font_thick = 1 if font_scale < 0.8 else 2
    pad = max(1, int(round(font_scale * 3)))

    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    for i in order:
        if scores is not None and not scores[i] >= score_thresh:
            continue
        if not np.all(np.isfinite(boxes[i])):
            continue
        x1, y1, x2, y2 = boxes[i]
        # continuous -> pixel indices of the first/last covered pixel, clipped to the image
        px1, py1 = int(np.clip(math.floor(x1), 0, w - 1)), int(np.clip(math.floor(y1), 0, h - 1))
        px2, py2 = int(np.clip(math.ceil(x2) - 1, 0, w - 1)), int(np.clip(math.ceil(y2) - 1, 0, h - 1))
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h or px2 < px1 or py2 < py1:
            continue  # entirely outside the image
        k = int(labels[i]) - label_offset  # index into class_names
        ci = k - 1 if has_bg else k  # class index (position among the real classes): picks the colour
        color = None
        if colors is not None:
            try:
                color = tuple(int(c) for c in colors[ci])
            except (KeyError, IndexError, TypeError):
                color = None
        color = color or class_color(ci)
        cv2.rectangle(img, (px1, py1), (px2, py2), color, thickness, cv2.LINE_8)

        known = class_names is not None and 0 <= k < len(class_names)
        name = str(class_names[k]) if known else f"class {int(labels[i])}"
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        text, fs = _fit_text(text, w - 2 * pad, font_scale, font_thick)
        (tw, th), base = cv2.getTextSize(text, _FONT, fs, font_thick)
        bw, bh = tw + 2 * pad, th + base + 2 * pad
        tx = int(np.clip(px1 - thickness // 2, 0, max(0, w - bw)))
        ty = py1 - thickness // 2 - bh  # tag above the box, or inside it at the top when there is no room
        if ty < 0:
            ty = min(py1 + thickness, max(0, h - bh))
        cv2.rectangle(img, (tx, ty), (tx + bw - 1, ty + bh - 1), color, -1)
        cv2.putText(img, text, (tx + pad, ty + pad + th), _FONT, fs, _text_color(color), font_thick, cv2.LINE_AA)
    return img


def draw_classification(image_rgb, lines: Sequence[str], min_width: int = 256,
                        line_colors: Optional[Sequence] = None) -> np.ndarray:
    """The image with a dark banner above it holding ``lines`` (e.g. top-k "dog 0.93"), one per row.

    Images narrower than ``min_width`` are scaled up first so the text stays legible; the result is taller
    than the input by the banner. line_colors: optional RGB per line (default white).
    """
    img = to_rgb_uint8(image_rgb)
    h, w = img.shape[:2]
    if w < min_width:
        s = min_width / w
        img = cv2.resize(img, (min_width, max(1, int(round(h * s)))),
                         interpolation=cv2.INTER_NEAREST if s >= 4 else cv2.INTER_LINEAR)
        h, w = img.shape[:2]
    lines = [str(t) for t in lines]
    scale = min(1.2, max(0.45, w / 420))
    thick = 1 if scale < 0.8 else 2
    pad = max(3, int(round(scale * 6)))
    lh = _line_height(scale, thick) + pad
    banner = np.full((pad + lh * max(1, len(lines)), w, 3), 32, np.uint8)
    for j, text in enumerate(lines):
        text, fs = _fit_text(text, w - 2 * pad, scale, thick)
        (_, th), _ = cv2.getTextSize(text, _FONT, fs, thick)
        color = tuple(int(c) for c in line_colors[j]) if line_colors is not None else (255, 255, 255)
        cv2.putText(banner, text, (pad, pad + j * lh + th + 1), _FONT, fs, color, thick, cv2.LINE_AA)
    return np.concatenate([banner, img], axis=0)


def contact_sheet_layout(n: int, ncols: int, cell_size=(160, 160), caption_lines: int = 1, title: bool = False,
                         pad: int = 4) -> dict:
    """Geometry of ``make_contact_sheet``: sheet size and the top-left corner of every cell's image area."""
    cw, ch = (int(v) for v in cell_size)
    ncols = max(1, min(int(ncols), n))
    nrows = int(math.ceil(n / ncols))
    fs = min(0.8, max(0.35, cw / 320))
    cap_h = (_line_height(fs, 1) + 4) * caption_lines + 2 if caption_lines else 0
    title_fs = min(1.0, max(0.5, (ncols * cw) / 900))
    title_h = _line_height(title_fs, 1) + 12 if title else 0
    width = ncols * cw + (ncols + 1) * pad
    height = title_h + nrows * (ch + cap_h) + (nrows + 1) * pad
    cells = [(pad + (i % ncols) * (cw + pad), title_h + pad + (i // ncols) * (ch + cap_h + pad)) for i in range(n)]
    return dict(width=width, height=height, ncols=ncols, nrows=nrows, cell_w=cw, cell_h=ch, caption_h=cap_h,
                title_h=title_h, caption_scale=fs, title_scale=title_fs, cells=cells)


def make_contact_sheet(images: Sequence, captions: Optional[Sequence[str]] = None, ncols: int = 4,
                       cell_size=(160, 160), title: Optional[str] = None, pad: int = 4,
                       background=(255, 255, 255), letterbox_color=(40, 40, 40),
                       caption_colors: Optional[Sequence] = None) -> np.ndarray:
    """A grid of images, each letterboxed (aspect kept, centred) into a ``cell_size`` = (width, height) cell,
    its caption (may hold "\\n") under it, and an optional title band on top. Returns uint8 RGB.

    Sheet size: width = ncols * cell_w + (ncols + 1) * pad, height = title_h + nrows * (cell_h + caption_h) +
    (nrows + 1) * pad (``contact_sheet_layout`` gives the numbers); ncols is capped at len(images).
    caption_colors: optional RGB per caption (e.g. red for a wrong prediction), default black.
    """
    if len(images) == 0:
        raise ValueError("make_contact_sheet needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    cap_lines = max((len(str(c).split("\n")) for c in captions), default=0) if captions is not None else 0
    L = contact_sheet_layout(len(images), ncols, cell_size, cap_lines, title is not None, pad)
    cw, ch = L["cell_w"], L["cell_h"]
    sheet = np.empty((L["height"], L["width"], 3), np.uint8)
    sheet[:] = np.array(background, np.uint8)
    if title is not None:
        text, fs = _fit_text(str(title), L["width"] - 2 * pad, L["title_scale"], 1)
        (tw, th), _ = cv2.getTextSize(text, _FONT, fs, 1)
        cv2.putText(sheet, text, (pad + 2, (L["title_h"] + th) // 2 + 1), _FONT, fs, (0, 0, 0), 1, cv2.LINE_AA)
    for i, im in enumerate(images):
        im = to_rgb_uint8(im)
        x0, y0 = L["cells"][i]
        cell = sheet[y0:y0 + ch, x0:x0 + cw]
        cell[:] = np.array(letterbox_color, np.uint8)
        h, w = im.shape[:2]
        s = min(cw / w, ch / h)
        nw, nh = max(1, min(cw, int(round(w * s)))), max(1, min(ch, int(round(h * s))))
        if (nw, nh) != (w, h):
            im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        ox, oy = (cw - nw) // 2, (ch - nh) // 2
        cell[oy:oy + nh, ox:ox + nw] = im
        if captions is not None:
            color = tuple(int(c) for c in caption_colors[i]) if caption_colors is not None else (0, 0, 0)
            lh = L["caption_h"] // max(1, cap_lines) if cap_lines else 0
            for j, line in enumerate(str(captions[i]).split("\n")):
                text, fs = _fit_text(line, cw, L["caption_scale"], 1)
                (tw, th), _ = cv2.getTextSize(text, _FONT, fs, 1)
                cv2.putText(sheet, text, (x0 + max(0, (cw - tw) // 2), y0 + ch + 2 + j * lh + th + 2), _FONT, fs,
                            color, 1, cv2.LINE_AA)
    return sheet


def save_image(path, image_rgb, jpeg_quality: int = 95) -> str:
    """Write an RGB image to ``path`` (format from the extension), creating parent folders, atomically
    (temporary file in the same folder, then ``os.replace``). Returns the path as a string.

    Raises ValueError for an extension OpenCV cannot write and OSError when encoding or writing fails; both
    name the path.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise ValueError(f"cannot save image to {path}: no file extension to choose the format (.png, .jpg)")
    bgr = cv2.cvtColor(to_rgb_uint8(image_rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    try:
        ok, buf = cv2.imencode(ext, bgr, params)
    except cv2.error as e:
        raise ValueError(f"cannot save image to {path}: OpenCV cannot encode '{ext}' ({str(e).strip()})") from None
    if not ok:
        raise OSError(f"cannot save image to {path}: OpenCV failed to encode it as '{ext}'")
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(parent, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OSError(f"cannot save image to {path}: {e}") from e
    return path
