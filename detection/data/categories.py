"""Named class lists (DATA.CLASSES_FROM) and the placeholder convention.

'torchvision_coco': the label space of torchvision's COCO detectors, read from its weight metadata
(`FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]` without the background entry): 90 names where label
k is COCO category id k, the 11 unused ids named 'N/A'. Such placeholders keep their logit in the softmax (so the
scores are torchvision's) but are never reported, and match no dataset category.
"""
from typing import List, Sequence

__all__ = ["PLACEHOLDER", "NAMED_CLASS_LISTS", "named_class_list", "is_placeholder", "reported_mask"]

#: a class-list entry that stands for an unused label
PLACEHOLDER = "N/A"


def _torchvision_coco() -> List[str]:
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:])


NAMED_CLASS_LISTS = {"torchvision_coco": _torchvision_coco}


def named_class_list(name: str) -> List[str]:
    """The class names (labels 1..K) of a named list; ValueError listing the names for an unknown one."""
    if name not in NAMED_CLASS_LISTS:
        raise ValueError(f"unknown class list {name!r}; known: {sorted(NAMED_CLASS_LISTS)}")
    return NAMED_CLASS_LISTS[name]()


def is_placeholder(name: str) -> bool:
    return name == PLACEHOLDER


def reported_mask(class_names: Sequence[str]) -> List[bool]:
    """[K + 1] bools for labels 0..K: False for the background and for placeholders."""
    return [False] + [not is_placeholder(n) for n in class_names]
