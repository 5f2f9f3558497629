"""Generated datasets (the quick start's and the tests' data, since no real dataset can be downloaded everywhere).

``detection.datasets.synthetic`` draws shape images and writes them in the real VOC and COCO formats, which the
readers in ``detection.data`` then read like any other dataset. Owns making data files. May use ``detection.data``'s
file formats and the numpy box utilities of ``detection.evaluation``; must not import ``detection.modeling`` or
``detection.engine`` (a generator needs no model).
"""
