"""The model's input side: resize, normalise and pad a list of images into one batch; boxes follow.

Like torchvision's GeneralizedRCNNTransform, the engine hands the model raw RGB images in 0..1 and the model is
the only place that resizes (training and test alike, so both see identically resampled pixels, and an exported
graph holds the resize too). The size comes from detection/ops/resize.py:
- eval: the shortest side becomes `test_min_size`, the longest capped at `test_max_size`;
- training: the shortest side is drawn uniformly from `train_min_sizes` per image (torch's RNG, saved in
  checkpoints, so a resumed run draws the same sizes), capped at `train_max_size`;
by `resize_rule` ('py-faster-rcnn' or 'torchvision'). Detections are mapped back to the original size.
Then (x - pixel_mean) / pixel_std per RGB channel, and zero padding (after normalisation) at the bottom/right
to a common size that is a multiple of `size_divisibility`. Under the 'torchvision' rule the image is normalised
before it is resized, in GeneralizedRCNNTransform's order, so the model's input is torchvision's bit for bit.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

import torch.nn.functional as F

from detection.ops.resize import RESIZE_RULES, resize_image, resize_size
from detection.ops.shapes import as_size, host_values, shape, tracing


class Batch(NamedTuple):
    """A preprocessed batch of B images.

    images: [B, 3, Hp, Wp] normalised, zero-padded. image_sizes: [B, 2] int64 (h, w) after resizing, before
    padding. original_sizes: [B, 2] int64 (h, w) as given. scales: [B] float resize factor from the given image.
    gt_boxes: [B, G, 4] xyxy in resized pixels, gt_labels: [B, G] int64 with 0 = padding (training only).
    """
    images: Tensor
    image_sizes: Tensor
    original_sizes: Tensor
    scales: Tensor
    gt_boxes: Optional[Tensor] = None
    gt_labels: Optional[Tensor] = None


class ImagePreprocessor(nn.Module):
    """list[Tensor[3, H, W] float RGB 0..1] (+ targets) -> Batch; `postprocess` maps detections back.

    Args:
        pixel_mean, pixel_std: RGB statistics in 0..1 units.
        test_min_size, test_max_size: eval-time resize (TEST.SCALES[0], TEST.MAX_SIZE).
        train_min_sizes, train_max_size: train-time resize choices (TRAIN.SCALES, TRAIN.MAX_SIZE).
        resize_rule: 'py-faster-rcnn' or 'torchvision' (detection/ops/resize.py).
        size_divisibility: padded height and width are multiples of this (the trunk's stride).
    """

    def __init__(self, pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 pixel_std: Sequence[float] = (0.229, 0.224, 0.225), test_min_size: int = 600,
                 test_max_size: int = 1000, train_min_sizes: Sequence[int] = (600,), train_max_size: int = 1000,
                 resize_rule: str = "py-faster-rcnn", size_divisibility: int = 16):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), False)
        self.test_min_size, self.test_max_size = test_min_size, test_max_size
        self.train_min_sizes, self.train_max_size = tuple(train_min_sizes), train_max_size
        if resize_rule not in RESIZE_RULES:
            raise ValueError(f"resize rule must be one of {list(RESIZE_RULES)}, got {resize_rule!r}")
        self.resize_rule = resize_rule
        self._normalise_first = resize_rule == "torchvision"
        self.size_divisibility = size_divisibility

    def forward(self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None,
                test_min_size: Optional[int] = None) -> Batch:
        """images [3, H, W] float RGB 0..1 (+ training targets) -> Batch; `test_min_size` overrides the eval
        resize's shortest side for this call (test-time augmentation's scales).

        Every size is computed by detection/ops/resize.py's resize_size on the image's shape as a tensor, so a
        traced graph (export) computes it for the input it is given (detection/ops/shapes.py)."""
        if len(images) == 0:
            raise ValueError("empty list of images")
        device = self.pixel_mean.device
        resized, sizes, orig, scales, boxes = [], [], [], [], []
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected a [3, H, W] tensor, got shape {tuple(img.shape)}")
            img = img.to(device=device, dtype=torch.float32)
            hw = shape(img, (1, 2))
            new, scale = resize_size(hw, self._min_size(test_min_size), self.max_size, self.resize_rule)
            if self._normalise_first:
                img = (img - self.pixel_mean) / self.pixel_std
            if tracing():  # interpolated always: at its own size the bilinear resize is the identity
                img = F.interpolate(img[None], size=(as_size(new[0], 1), as_size(new[1], 1)), mode="bilinear",
                                    align_corners=False)[0]
            else:
                img = resize_image(img, tuple(host_values(new)))
            resized.append(img)
            sizes.append(new)
            orig.append(hw)
            scales.append(scale)
            if targets is not None:
                (nh, nw), (h, w) = host_values(new), host_values(hw)
                factor = torch.tensor([nw / w, nh / h, nw / w, nh / h], device=device)
                boxes.append(targets[i]["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4) * factor)
        sizes_t = torch.stack(sizes)  # on the CPU: the padded size needs no device sync
        batch = self._pad_and_normalise(resized, sizes_t)
        out = Batch(batch, sizes_t.to(device), torch.stack(orig).to(device),
                    torch.stack(scales).to(device=device, dtype=torch.float32))
        if targets is None:
            return out
        return out._replace(**self._pad_targets(boxes, [t["labels"] for t in targets]))

    @property
    def max_size(self) -> int:
        return self.train_max_size if self.training else self.test_max_size

    def _min_size(self, test_min_size: Optional[int] = None) -> int:
        """The shortest side for this image: the test size (or `test_min_size`), or in training one of
        train_min_sizes drawn with torch's RNG (saved in checkpoints)."""
        if not self.training:
            return self.test_min_size if test_min_size is None else test_min_size
        pick = int(torch.randint(len(self.train_min_sizes), ())) if len(self.train_min_sizes) > 1 else 0
        return self.train_min_sizes[pick]

    def _pad_and_normalise(self, images: List[Tensor], sizes: Tensor) -> Tensor:
        """[B, 3, Hp, Wp]: the images normalised (unless already) and zero-padded at the bottom and right to the
        largest size rounded up to a multiple of size_divisibility. sizes: int64 [B, 2] on the CPU."""
        d = self.size_divisibility
        padded = (sizes.max(dim=0).values + d - 1) // d * d  # [2]
        if tracing():
            out = []
            for img, size in zip(images, sizes):
                if not self._normalise_first:
                    img = (img - self.pixel_mean) / self.pixel_std
                pad = padded.to(size) - size
                out.append(F.pad(img, (0, as_size(pad[1]), 0, as_size(pad[0]))))
            return torch.stack(out)
        hp, wp = host_values(padded)
        batch = images[0].new_zeros((len(images), 3, hp, wp))
        for i, img in enumerate(images):
            if self._normalise_first:
                batch[i, :, :img.shape[1], :img.shape[2]].copy_(img)
            else:
                torch.sub(img, self.pixel_mean, out=batch[i, :, :img.shape[1], :img.shape[2]]).div_(self.pixel_std)
        return batch

    def _pad_targets(self, boxes: List[Tensor], labels: List[Tensor]) -> Dict[str, Tensor]:
        """Pad to [B, G]; boxes with no area are turned into padding (label 0) so they cannot be matched."""
        device = self.pixel_mean.device
        g = max(max(b.shape[0] for b in boxes), 1)  # >= 1 column so that gathers by gt index stay valid
        gt_boxes = torch.zeros((len(boxes), g, 4), device=device)
        gt_labels = torch.zeros((len(boxes), g), dtype=torch.int64, device=device)
        for i, (b, lab) in enumerate(zip(boxes, labels)):
            gt_boxes[i, :b.shape[0]] = b
            gt_labels[i, :b.shape[0]] = lab.to(device=device, dtype=torch.int64).reshape(-1)
        nonempty = (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])
        return {"gt_boxes": gt_boxes, "gt_labels": gt_labels * nonempty}

    @staticmethod
    def postprocess(detections: List[Dict[str, Tensor]], batch: Batch) -> List[Dict[str, Tensor]]:
        """Rescale each image's boxes [M, 4] from resized to original pixels, clipped to the original image."""
        ratios = (batch.original_sizes.float() / batch.image_sizes.float()).flip(1).repeat(1, 2)  # [B, 4] (w, h, w, h)
        highs = batch.original_sizes.flip(1).repeat(1, 2).to(torch.float32)  # [B, 4] (w, h, w, h)
        return [{**det, "boxes": torch.minimum((det["boxes"] * ratio).clamp(min=0), high)}
                for det, ratio, high in zip(detections, ratios, highs)]

    def extra_repr(self) -> str:
        return (f"test=({self.test_min_size}, {self.test_max_size}), train=({self.train_min_sizes}, "
                f"{self.train_max_size}), resize_rule={self.resize_rule!r}, "
                f"size_divisibility={self.size_divisibility}")
