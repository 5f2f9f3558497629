"""Exception types of the ops' argument checks that both kinds of caller catch: code written for our messages
(ValueError, TypeError) and code written for torchvision.ops, which raises AssertionError for a bad boxes argument
(`torch._assert`) and RuntimeError from its kernels for a bad input tensor, dtype or device.

Under TorchScript a raised exception surfaces as `torch.jit.Error` carrying the same message, as torchvision's do.
"""

__all__ = ["BoxShapeError", "BoxTypeError", "RoiInputError", "RoiDtypeError"]


class BoxShapeError(ValueError, AssertionError):
    """boxes is not [K, 5] (batch_index, x1, y1, x2, y2) or a list of [L, 4] xyxy tensors."""


class BoxTypeError(TypeError, AssertionError):
    """boxes is neither a Tensor nor a list / tuple of Tensors."""


class RoiInputError(ValueError, RuntimeError):
    """The feature map is not [B, C, H, W], or it and the boxes are on different devices."""


class RoiDtypeError(TypeError, RuntimeError):
    """The feature map and the boxes have different dtypes (outside autocast)."""
