"""detection: a Faster R-CNN object-detection toolkit on PyTorch with its own compiled ops."""

__version__ = "0.1.0"
