"""The Backbone container, the BACKBONES registry and the shared build steps (load, split, freeze)."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
import torchvision
from torch import nn

from detection.registry import Registry

from .frozen_bn import FixedBatchNorm2d, convert_frozen_batchnorm
from .weights import load_into, load_state_dict_file, resolve_weights

BACKBONES = Registry("backbone")


class StageSpec(NamedTuple):
    """A feature a pyramid neck can tap: the output of body layer `name`, at `stride` input pixels, `channels`."""
    name: str
    stride: int
    channels: int


class Backbone(nn.Module):
    """A torchvision ImageNet network split for Faster R-CNN (C4 style) and for classification.

    Attributes:
        trunk: [B,3,H,W] normalised RGB -> [B, trunk_channels, ~H/16, ~W/16] (stride 16).
        head: per-RoI [R, trunk_channels, P, P] (P = pooler_size) -> [R, head_channels] vectors.
        trunk_channels, head_channels: ints. stride: 16. pooler_size: P the head was designed for.
        cls_pool: module between trunk and head on the classification path (VGG: pool5 + 7x7 adaptive avg
            pool; ResNet/MobileNetV2: identity, their head pools globally).
        classifier_layer: torchvision's final ImageNet nn.Linear(head_channels, 1000) with the loaded weights
            (requires_grad=False), or None after drop_classifier_layer().
        stages: list of parameter-holding modules in freeze order (see FREEZE_AT in docs/config.md).
        name: registry name. weights_source: the file the weights came from, or None (random init).
        stage_specs: the StageSpec of every feature a neck (FPN) can tap, by increasing stride.

    ``body_layers()`` lists, in order, the named layers that run from the image to the deepest stage (torchvision's
    own child names, e.g. conv1, bn1, relu, maxpool, layer1..layer4 for ResNet), so a neck can run them one by one
    and read the StageSpec outputs; the modules are the trunk's and head's own (shared, not copies).

    ``forward(x)`` is ``trunk(x)``; ``features_for_classification(x)`` = head(cls_pool(trunk(x))): [B,3,H,W] ->
    [B, head_channels]; ``classify(x)`` applies classifier_layer on that and reproduces torchvision's logits
    (in eval mode) when the ImageNet weights are loaded.
    """

    stride = 16

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        head: nn.Module,
        trunk_channels: int,
        head_channels: int,
        pooler_size: int,
        classifier_layer: Optional[nn.Linear],
        cls_pool: Optional[nn.Module] = None,
        stages: Sequence[nn.Module] = (),
        body_paths: Sequence[Tuple[str, str]] = (),
        stage_specs: Sequence[StageSpec] = (),
    ):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.head = head
        self.cls_pool = cls_pool if cls_pool is not None else nn.Identity()
        self.trunk_channels = int(trunk_channels)
        self.head_channels = int(head_channels)
        self.pooler_size = int(pooler_size)
        self.classifier_layer = classifier_layer
        if classifier_layer is not None:
            classifier_layer.requires_grad_(False)
        self._stages = list(stages)  # plain list: the modules are registered under trunk/head already
        self._body_paths = [(str(n), str(p)) for n, p in body_paths]  # (body name, dotted path in self)
        self.stage_specs = [StageSpec(*s) for s in stage_specs]
        self.weights_source: Optional[str] = None
        self.frozen_stages = 0

    @property
    def stages(self) -> list:
        return list(self._stages)

    def body_layers(self) -> "OrderedDict[str, nn.Module]":
        """The named layers from the image to the deepest StageSpec, in order (looked up now, so modules swapped
        by freeze() are the ones returned)."""
        if not self._body_paths:
            raise NotImplementedError(f"backbone {self.name} does not describe its stages for a pyramid neck")
        return OrderedDict((n, self.get_submodule(p)) for n, p in self._body_paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] normalised RGB -> [B, trunk_channels, H', W'] with H' = H/16 (rounded as the convs do)."""
        return self.trunk(x)

    def features_for_classification(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] normalised RGB -> [B, head_channels] image vectors (torchvision's penultimate features)."""
        return self.head(self.cls_pool(self.trunk(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] -> [B,1000] ImageNet logits through torchvision's own final layer."""
        if self.classifier_layer is None:
            raise RuntimeError(f"{self.name}: classifier_layer was dropped")
        return self.classifier_layer(self.features_for_classification(x))

    def drop_classifier_layer(self) -> "Backbone":
        """Forget the ImageNet final layer (detectors do not use it); returns self."""
        self.classifier_layer = None
        return self

    def freeze(self, freeze_at: int) -> "Backbone":
        """Freeze the first ``freeze_at`` stages: requires_grad=False and their BatchNorms made frozen."""
        if not 0 <= freeze_at <= len(self._stages):
            raise ValueError(f"freeze_at for {self.name} must be in 0..{len(self._stages)}, got {freeze_at}")
        for stage in self._stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)
            _convert_children(stage)
        self.frozen_stages = freeze_at
        return self

    def extra_repr(self) -> str:
        return (f"name={self.name}, trunk_channels={self.trunk_channels}, head_channels={self.head_channels}, "
                f"stride={self.stride}, pooler_size={self.pooler_size}, frozen_stages={self.frozen_stages}, "
                f"weights={self.weights_source}")


def _convert_children(stage: nn.Module) -> None:
    """Fix the BatchNorm2d layers inside ``stage`` in place (a stage is a container, never a bare BatchNorm), as
    FixedBatchNorm2d: their eval-mode BatchNorm2d arithmetic is kept (torchvision's v2 detector's numbers)."""
    if isinstance(stage, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        raise TypeError("a freeze stage must not be a bare BatchNorm module")
    convert_frozen_batchnorm(stage, FixedBatchNorm2d)


def build_torchvision_model(name: str, weights: Optional[str], ctor: Optional[Callable] = None):
    """Construct torchvision's ``name`` model (``ctor(weights=None)``, default ``torchvision.models.<name>``)
    with ``weights`` (see weights.resolve_weights) loaded; returns (model, file used or None).

    With a file, the model is built on the meta device and the file's tensors are assigned (no wasted random
    init, no second copy) unless the file lacks some keys, which then keep torchvision's init."""
    ctor = ctor or getattr(torchvision.models, name)
    path = resolve_weights(name, weights)
    if path is None:
        return ctor(weights=None), None
    sd = load_state_dict_file(path)
    with torch.device("meta"):
        meta = ctor(weights=None)
    own = meta.state_dict()
    complete = all(k in sd for k in own if not k.endswith("num_batches_tracked"))
    sd = {k: (v.to(own[k].dtype) if k in own and torch.is_tensor(v) and v.is_floating_point() else v)
          for k, v in sd.items()}
    if complete:
        model = meta
        load_into(model, sd, source=path, assign=True)
        for m in model.modules():  # BN counters absent from old files
            for bname, buf in list(m.named_buffers(recurse=False)):
                if buf is not None and buf.is_meta:
                    setattr(m, bname, torch.zeros(buf.shape, dtype=buf.dtype))
    else:
        model = ctor(weights=None)
        load_into(model, sd, source=path)
    return model, path


def build_backbone(name: str, weights: Optional[str] = None, freeze_at: int = 2, frozen_bn: bool = True,
                   keep_classifier_layer: bool = True) -> Backbone:
    """Build a registered backbone.

    name: one of BACKBONES.names() (vgg16, resnet18, resnet34, resnet50, resnet101, mobilenet_v2).
    weights: None/"" random init; "imagenet" torchvision's file from the hub cache or a carrier package; a path
        to a torchvision state dict (or a folder holding torchvision's file name). Never downloads.
    freeze_at: stages frozen from the input side (0 = none; see docs/config.md for each backbone).
    frozen_bn: BatchNorm2d -> FrozenBatchNorm2d everywhere (ResNet, MobileNetV2; VGG16 has no BN).
    keep_classifier_layer: False drops torchvision's final ImageNet Linear (detectors do not need it).
    """
    builder = BACKBONES.get(name)
    bb = builder(weights=weights, frozen_bn=frozen_bn)
    bb.freeze(freeze_at)
    if not keep_classifier_layer:
        bb.drop_classifier_layer()
    return bb


def build_backbone_from_config(cfg, load_weights: bool = True) -> Backbone:
    """build_backbone from MODEL.BACKBONE.{NAME,WEIGHTS,FROZEN_BN} and MODEL.FREEZE_AT; the ImageNet final
    layer is kept only for MODEL.META_ARCHITECTURE == 'classifier'. load_weights=False: without
    MODEL.BACKBONE.WEIGHTS (no file is looked for), for a model whose every weight a checkpoint is about to fill."""
    m = cfg.MODEL
    if not load_weights:
        return build_backbone(m.BACKBONE.NAME, weights=None, freeze_at=m.FREEZE_AT, frozen_bn=m.BACKBONE.FROZEN_BN,
                              keep_classifier_layer=m.META_ARCHITECTURE == "classifier")
    if not m.BACKBONE.WEIGHTS and (m.FREEZE_AT > 0 or m.BACKBONE.FROZEN_BN):
        logging.getLogger(__name__).warning(
            "MODEL.BACKBONE.WEIGHTS is '' (random initialisation) but MODEL.FREEZE_AT=%s and "
            "MODEL.BACKBONE.FROZEN_BN=%s: frozen stages keep their random values and frozen BatchNorm does not "
            "normalise; for training from scratch set MODEL.FREEZE_AT 0 and MODEL.BACKBONE.FROZEN_BN False",
            m.FREEZE_AT, m.BACKBONE.FROZEN_BN)
    return build_backbone(
        m.BACKBONE.NAME,
        weights=m.BACKBONE.WEIGHTS,
        freeze_at=m.FREEZE_AT,
        frozen_bn=m.BACKBONE.FROZEN_BN,
        keep_classifier_layer=m.META_ARCHITECTURE == "classifier",
    )
