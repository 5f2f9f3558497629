"""VGG16 split as in py-faster-rcnn: trunk conv1_1..conv5_3 (+ReLU, no pool5), head fc6/fc7 on 7x7 RoIs."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from torch import nn

from .base import BACKBONES, Backbone, StageSpec, build_torchvision_model

# torchvision vgg16().features indices where conv1..conv5 start; 30 is pool5 (not in the trunk)
_VGG16_STAGES = (0, 5, 10, 17, 24, 30)


@BACKBONES.register("vgg16")
def build_vgg16(weights: Optional[str] = None, frozen_bn: bool = True) -> Backbone:
    """VGG16. trunk: features[:30], [B,3,H,W] -> [B,512,H/16,W/16]. head: [R,512,7,7] -> flatten -> fc6, ReLU,
    Dropout, fc7, ReLU, Dropout (torchvision's classifier[:-1]) -> [R,4096]. cls_pool: pool5 + AdaptiveAvgPool
    (7x7), so the classification path equals torchvision's. Stages (FREEZE_AT): conv1..conv5. frozen_bn: unused.
    Pyramid stages (FPN): relu3_3, relu4_3, relu5_3 (features[15], [22], [29]) and pool5 ([30]) at strides 4, 8,
    16, 32 with 256, 512, 512, 512 channels (body layer names are the features indices)."""
    model, src = build_torchvision_model("vgg16", weights)
    f, c = model.features, model.classifier
    trunk = f[: _VGG16_STAGES[-1]]
    head = nn.Sequential(
        OrderedDict(flatten=nn.Flatten(1), fc6=c[0], relu6=c[1], drop6=c[2], fc7=c[3], relu7=c[4], drop7=c[5])
    )
    cls_pool = nn.Sequential(OrderedDict(pool5=f[30], avgpool=model.avgpool))
    stages = [trunk[a:b] for a, b in zip(_VGG16_STAGES[:-1], _VGG16_STAGES[1:])]
    body = [(str(i), f"trunk.{i}") for i in range(_VGG16_STAGES[-1])] + [("30", "cls_pool.pool5")]
    specs = [StageSpec("15", 4, 256), StageSpec("22", 8, 512), StageSpec("29", 16, 512), StageSpec("30", 32, 512)]
    bb = Backbone("vgg16", trunk, head, 512, 4096, pooler_size=7, classifier_layer=c[6], cls_pool=cls_pool,
                  stages=stages, body_paths=body, stage_specs=specs)
    bb.weights_source = src
    return bb
