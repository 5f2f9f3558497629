"""A light per-RoI head: two fully connected layers on the pooled trunk features (torchvision's TwoMLPHead).

The C4 design runs the backbone's last stage on every RoI (VGG fc6/fc7, ResNet res5, MobileNetV2 features[14:]);
on a CPU that dominates the cost with light trunks (MobileNetV2's stage on 7x7 RoIs is ~25 MFLOPs per RoI, while
this head with dim 512 is ~2.5 MFLOPs). MODEL.ROI_HEADS.BOX_HEAD: mlp selects it.
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
