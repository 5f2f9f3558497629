"""Image classifier for transfer learning: a registry backbone, global pooling, dense layers with dropout.

    images [3,H,W] 0..1 -> resize to S x S (unless already) -> normalise -> backbone.features_for_classification
    ([B, C]: trunk, global pooling / VGG pool5 + fc6/fc7) -> dense head (Dropout, Linear, ReLU)* -> Dropout ->
    Linear -> logits [B, K]

Training: ``model(images, targets) -> dict(loss_cls=cross-entropy)``; targets carry ``label`` (int64 []).
Evaluation: ``model(images) -> [dict(scores [K] probabilities sorted descending, labels [K] class ids in that
order, probs [K] probabilities in class order)]`` - ``labels[0]`` is the prediction, ``scores[0]`` its probability.

Cached features: ``images`` may instead be 1-D tensors ``[C]`` (backbone features computed once by
detection/data/feature_cache.py); the backbone is then skipped. This is only right when the whole backbone is
frozen (``backbone_frozen``), which is when the cache is used.

Freezing works in *units*: the backbone's stages (``Backbone.stages``, input side first) and, where the
backbone's head holds parameters no stage covers (VGG16 fc6/fc7), that head as a last unit. The first
``frozen_units`` units get requires_grad=False and stay in eval mode (dropout off, BatchNorm statistics fixed).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detection.modeling.backbone import Backbone, build_backbone
from detection.modeling.build import META_ARCHITECTURES
from detection.ops.resize import resize_square

__all__ = ["ImageClassifier", "backbone_units", "build_classifier", "imagenet_class_names"]


def backbone_units(backbone: Backbone) -> List[Tuple[str, nn.Module]]:
    """The freezable units of ``backbone``, input side first: (name, module) for each stage, plus ('head',
    backbone.head) when the head has parameters outside the stages (VGG16 fc6/fc7, the 'tiny' fc)."""
    names = {id(m): n for n, m in backbone.named_modules()}
    units = [(names.get(id(s), f"stage{i + 1}"), s) for i, s in enumerate(backbone.stages)]
    in_stages = {id(p) for s in backbone.stages for p in s.parameters()}
    if any(id(p) not in in_stages for p in backbone.head.parameters()):
        units.append(("head", backbone.head))
    return units


class ImageClassifier(nn.Module):
    """Backbone features -> dense head -> K logits (see the module docstring for the contract).

    backbone: a Backbone (its ``classifier_layer`` is used only when ``pretrained_layer``).
    num_classes: K. hidden: widths of the dense layers (e.g. (256,)); () = one Linear. dropout: probability of
        the Dropout before each Linear (0 = none).
    pixel_means / pixel_stds: per-channel RGB statistics (0..1 scale) for normalisation.
    image_size: S, the square side the backbone sees. resize_mode: 'squash' or 'center_crop' (resize_square).
    frozen_units: how many backbone units (backbone_units) are frozen, from the input side.
    pretrained_layer: use the backbone's own ImageNet layer as the head (K = 1000, nothing trains).
    """

    def __init__(self, backbone: Backbone, num_classes: int, hidden: Sequence[int] = (256,), dropout: float = 0.5,
                 pixel_means: Sequence[float] = (0.485, 0.456, 0.406),
                 pixel_stds: Sequence[float] = (0.229, 0.224, 0.225), image_size: int = 224,
                 resize_mode: str = "squash", frozen_units: int = 0, pretrained_layer: bool = False):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(backbone.head_channels)
        self.image_size = int(image_size)
        self.resize_mode = resize_mode
        self.pretrained_layer = bool(pretrained_layer)
        self.register_buffer("pixel_mean", torch.tensor(pixel_means, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_stds, dtype=torch.float32).view(1, 3, 1, 1), False)
        if self.pretrained_layer:
            layer = backbone.classifier_layer
            if layer is None:
                raise ValueError(f"backbone {backbone.name} has no ImageNet classifier layer (built with "
                                 f"keep_classifier_layer=False)")
            if num_classes != layer.out_features:
                raise ValueError(f"the pretrained layer of {backbone.name} predicts {layer.out_features} classes, "
                                 f"not {num_classes} (MODEL.NUM_CLASSES)")
            self.head = nn.Identity()
            frozen_units = len(backbone_units(backbone))
        else:
            if num_classes < 2:
                raise ValueError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
            layers: List[nn.Module] = []
            c = self.feature_dim
            for h in hidden:
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
                layers += [nn.Linear(c, int(h)), nn.ReLU(inplace=True)]
                c = int(h)
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(c, int(num_classes)))
            self.head = nn.Sequential(*layers)
        self.num_classes = int(num_classes)
        self.units = backbone_units(backbone)
        self._freeze(frozen_units)
        self.fully_pretrained = self.pretrained_layer and backbone.weights_source is not None

    # -- freezing -------------------------------------------------------------------------------------------------
    def _freeze(self, frozen_units: int) -> None:
        n = len(self.units)
        if not 0 <= frozen_units <= n:
            raise ValueError(f"frozen units for {self.backbone.name} must be in 0..{n} "
                             f"({', '.join(u for u, _ in self.units)}), got {frozen_units}")
        for _, unit in self.units[:frozen_units]:
            unit.requires_grad_(False)
        self.frozen_units = int(frozen_units)
        self.train(self.training)

    @property
    def backbone_frozen(self) -> bool:
        """True when no backbone parameter trains (the features are a fixed function of the image)."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def trainable_description(self) -> str:
        """One line per unit saying whether it trains (for the model summary)."""
        lines = [f"  {name}: {'frozen' if i < self.frozen_units else 'trainable'}"
                 for i, (name, _) in enumerate(self.units)]
        head = "ImageNet layer (frozen)" if self.pretrained_layer else "dense head: trainable"
        return "backbone units (input side first):\n" + "\n".join(lines) + f"\n  {head}"

    def train(self, mode: bool = True) -> "ImageClassifier":
        """As nn.Module.train, but frozen units stay in eval mode (dropout off, BatchNorm statistics fixed)."""
        super().train(mode)
        if mode:
            if self.backbone_frozen:
                self.backbone.eval()
            else:
                for _, unit in self.units[:self.frozen_units]:
                    unit.eval()
        return self

    # -- forward --------------------------------------------------------------------------------------------------
    def preprocess(self, images: List[torch.Tensor]) -> torch.Tensor:
        """list of [3, H, W] float RGB 0..1 -> [B, 3, S, S] normalised (resized with resize_square if needed)."""
        try:
            x = torch.stack(images)
            x = resize_square(x, self.image_size, self.resize_mode)
        except RuntimeError:  # images of different sizes (demo, test without a resizing loader)
            x = torch.stack([resize_square(img, self.image_size, self.resize_mode) for img in images])
        return (x - self.pixel_mean) / self.pixel_std

    def extract_features(self, images: List[torch.Tensor]) -> torch.Tensor:
        """list of [3, H, W] images -> [B, C] backbone features (C = backbone.head_channels)."""
        return self.backbone.features_for_classification(self.preprocess(images))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C] features -> [B, K] logits."""
        if self.pretrained_layer:
            return self.backbone.classifier_layer(features)
        return self.head(features)

    def features_of(self, images: List[torch.Tensor]) -> torch.Tensor:
        """[B, C] features from images, or from 1-D cached feature tensors [C] (stacked as they are)."""
        if images[0].dim() == 1:
            feats = torch.stack(images)
            if feats.shape[1] != self.feature_dim:
                raise ValueError(f"cached features have {feats.shape[1]} channels, the {self.backbone.name} "
                                 f"classifier expects {self.feature_dim} (stale feature cache?)")
            return feats
        return self.extract_features(images)

    def forward(self, images: List[torch.Tensor], targets: Optional[List[Dict]] = None):
        logits = self.logits(self.features_of(images))
        if self.training:
            if targets is None:
                raise ValueError("the classifier needs targets (dicts with 'label') in training mode")
            labels = torch.stack([t["label"] for t in targets]).to(logits.device).long().view(-1)
            return {"loss_cls": F.cross_entropy(logits, labels)}
        return self.outputs_from_probs(logits.float().softmax(dim=1))

    @staticmethod
    def outputs_from_probs(probs: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """[B, K] probabilities -> the evaluation outputs (scores/labels sorted descending, probs in class order)."""
        scores, labels = probs.sort(dim=1, descending=True)
        return [dict(scores=s, labels=lab, probs=p) for s, lab, p in zip(scores, labels, probs)]


# ------------------------------------------------------------------------------------------------------------------
# Building from the config
# ------------------------------------------------------------------------------------------------------------------
def imagenet_class_names(backbone_name: str = "mobilenet_v2") -> List[str]:
    """The 1000 ImageNet class names in torchvision's label order (from its weights' meta; offline)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(backbone_name)
    except (ValueError, KeyError):
        enum = torchvision.models.get_model_weights("mobilenet_v2")
    return list(enum.IMAGENET1K_V1.meta["categories"])


def frozen_units_from_config(cfg, n_units: int) -> int:
    """MODEL.CLS_HEAD.TRAINABLE_STAGES >= 0: n_units minus it; otherwise MODEL.FREEZE_AT."""
    top = int(cfg.MODEL.CLS_HEAD.TRAINABLE_STAGES)
    if top >= 0:
        if top > n_units:
            raise ValueError(f"MODEL.CLS_HEAD.TRAINABLE_STAGES is {top} but {cfg.MODEL.BACKBONE.NAME} has only "
                             f"{n_units} freezable units")
        return n_units - top
    n = int(cfg.MODEL.FREEZE_AT)
    if not 0 <= n <= n_units:
        raise ValueError(f"MODEL.FREEZE_AT is {n} but {cfg.MODEL.BACKBONE.NAME} has {n_units} freezable units "
                         f"(0..{n_units})")
    return n


@META_ARCHITECTURES.register("classifier")
def build_classifier(cfg, num_classes: Optional[int] = None, load_backbone_weights: bool = True) -> ImageClassifier:
    """ImageClassifier from MODEL.BACKBONE.*, MODEL.FREEZE_AT / MODEL.CLS_HEAD.*, PIXEL_MEANS/STDS and
    CLS.IMAGE_SIZE / CLS.RESIZE. num_classes: K, resolved by the caller (the classification task finds it in the
    data); None = MODEL.NUM_CLASSES, else len(DATA.CLASSES) (1000 with MODEL.CLS_HEAD.PRETRAINED_LAYER).
    load_backbone_weights: False skips MODEL.BACKBONE.WEIGHTS (a checkpoint fills the model)."""
    m = cfg.MODEL
    pretrained_layer = bool(m.CLS_HEAD.PRETRAINED_LAYER)
    if num_classes is None:
        num_classes = int(m.NUM_CLASSES) or (1000 if pretrained_layer else len(cfg.DATA.CLASSES))
    if num_classes <= 0:
        raise ValueError("cannot tell the number of classes: MODEL.NUM_CLASSES is 0 and DATA.CLASSES is []; set "
                         "one of them (tools find the class folders of DATA.ROOT themselves)")
    weights = (m.BACKBONE.WEIGHTS or None) if load_backbone_weights else None
    backbone = build_backbone(m.BACKBONE.NAME, weights=weights, freeze_at=0,
                              frozen_bn=m.BACKBONE.FROZEN_BN, keep_classifier_layer=pretrained_layer)
    n_units = len(backbone_units(backbone))
    frozen = n_units if pretrained_layer else frozen_units_from_config(cfg, n_units)
    backbone.freeze(min(frozen, len(backbone.stages)))  # FrozenBatchNorm in frozen stages, as detection does
    return ImageClassifier(backbone, num_classes, hidden=tuple(m.CLS_HEAD.HIDDEN), dropout=float(m.CLS_HEAD.DROPOUT),
                           pixel_means=tuple(cfg.PIXEL_MEANS), pixel_stds=tuple(cfg.PIXEL_STDS),
                           image_size=int(cfg.CLS.IMAGE_SIZE), resize_mode=cfg.CLS.RESIZE, frozen_units=frozen,
                           pretrained_layer=pretrained_layer)
