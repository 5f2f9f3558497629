"""Per-RoI box heads on pooled features: two fully connected layers (torchvision's TwoMLPHead, FPN v1) and
convolutions + one fully connected layer (torchvision's FastRCNNConvFCHead, FPN v2).

The C4 design runs the backbone's last stage on every RoI (VGG fc6/fc7, ResNet res5, MobileNetV2 features[14:]);
on a CPU that dominates the cost with light trunks (MobileNetV2's stage on 7x7 RoIs is ~25 MFLOPs per RoI, while
this head with dim 512 is ~2.5 MFLOPs). MODEL.ROI_HEADS.BOX_HEAD: mlp selects it, 'convfc' the other one.
"""
from torch import Tensor, nn


class MLPBoxHead(nn.Module):
    """[R, C, P, P] pooled features -> flatten -> Linear(C*P*P, dim) -> ReLU -> Linear(dim, dim) -> ReLU -> [R, dim]."""

    def __init__(self, in_channels: int, pooler_size: int, dim: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * pooler_size * pooler_size, dim)
        self.fc7 = nn.Linear(dim, dim)
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_uniform_(fc.weight, a=1)  # detectron2's c2_xavier_fill
            nn.init.zeros_(fc.bias)
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.relu(self.fc6(x.flatten(1)), inplace=True)
        return nn.functional.relu(self.fc7(x), inplace=True)


class ConvFCBoxHead(nn.Sequential):
    """torchvision's FastRCNNConvFCHead (its v2 detector): per conv dim a 3x3 conv [+ BatchNorm2d] + ReLU, then
    flatten and per fc dim a Linear + ReLU. [R, C, P, P] -> [R, fc_dims[-1]].

    Layout (state-dict keys) as torchvision's: `<i>.0` conv, `<i>.1` norm for i < len(conv_dims), then Flatten,
    then alternating Linear / ReLU. norm: 'bn' or '' (conv with bias). Init: kaiming normal (fan_out) convs.
    """

    def __init__(self, in_channels: int, pooler_size: int, conv_dims=(256, 256, 256, 256), fc_dims=(1024,),
                 norm: str = "bn"):
        if norm not in ("", "bn"):
            raise ValueError(f"conv box head norm must be '' or 'bn', got {norm!r}")
        blocks, prev = [], in_channels
        for dim in conv_dims:
            layers = [nn.Conv2d(prev, dim, 3, padding=1, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm2d(dim))
            blocks.append(nn.Sequential(*layers, nn.ReLU(inplace=True)))
            prev = dim
        blocks.append(nn.Flatten())
        prev = prev * pooler_size * pooler_size
        for dim in fc_dims:
            blocks += [nn.Linear(prev, dim), nn.ReLU(inplace=True)]
            prev = dim
        super().__init__(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.out_channels = prev
