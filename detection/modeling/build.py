"""build_model(cfg): the model named by MODEL.META_ARCHITECTURE, from the META_ARCHITECTURES registry.

    model = build_model(cfg)     # cfg from detection.config.load_config

Registering another family (e.g. the classifier): a function ``(cfg) -> nn.Module`` decorated with
``@META_ARCHITECTURES.register("name")`` in a module imported by `_register_builtin` below.
"""
from torch import nn

from detection.registry import Registry

META_ARCHITECTURES = Registry("meta-architecture")


@META_ARCHITECTURES.register("faster_rcnn")
def _build_faster_rcnn(cfg) -> nn.Module:
    from detection.modeling.faster_rcnn import build_faster_rcnn

    return build_faster_rcnn(cfg)


def _register_builtin() -> None:
    """Import the modules that register more meta-architectures and backbones (optional ones may be absent)."""
    import importlib

    import detection.modeling.backbone_tiny  # noqa: F401  (registers the 'tiny' test backbone)

    if "classifier" not in META_ARCHITECTURES:
        try:
            importlib.import_module("detection.modeling.classifier")
        except ModuleNotFoundError as exc:
            if exc.name != "detection.modeling.classifier":
                raise


def build_model(cfg) -> nn.Module:
    """The model of cfg.MODEL.META_ARCHITECTURE ('faster_rcnn', or 'classifier' once registered)."""
    _register_builtin()
    return META_ARCHITECTURES.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
