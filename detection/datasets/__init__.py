"""Generated datasets (the quick start's and the tests' data, since no real dataset can be downloaded everywhere).

``detection.datasets.synthetic`` draws shape images and writes them in the real VOC and COCO formats, which the
readers in ``detection.data`` then read like any other dataset. What this package owns: making data files. What it
must not import: ``detection.modeling``, ``detection.engine`` or torch (a generator runs without a model); it may
use ``detection.data``'s file formats and the numpy box utilities of ``detection.evaluation``.
"""
