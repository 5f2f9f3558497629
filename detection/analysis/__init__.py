"""Analysis: look at a dataset the way the model sees it, and at a detector's errors.

- ``model_view``: the model's own resize and anchor generators, taken from a detector built from the config
  (no weights loaded);
- ``boxes``: ground-truth boxes in the resized frame, COCO's area bands; ``browse``: ground truth drawn as stored
  or as the model receives it;
- ``dataset_stats``: per-split statistics in the resized frame (boxes per class and image, COCO area bands,
  aspect ratios), images without boxes, and the boxes the readers clipped or dropped;
- ``anchor_coverage``: the best-anchor IoU of every ground-truth box under the model's anchors (the RPN's
  training rule, border included), and anchor sizes / ratios suggested in the generator's form;
- ``tide``: TIDE's error breakdown (Bolya et al., ECCV 2020), as the ``tidecv`` package computes it;
- ``confusion``: a class confusion matrix with background; ``size_ap``: AP at IoU 0.5 per COCO area band
  (pycocotools); ``worst``: the most confident false positives and the largest missed objects as a picture;
- ``plots`` (matplotlib, imported on use) and ``report``: charts and the one-file HTML report; ``error_report``
  puts the error analysis together (tools/analyze_results.py, tools/test_net.py --analyze).

Layer: above ``modeling``, ``data`` and ``evaluation`` (it imports them) and below ``engine``; it must not import
``detection.engine``, ``detection.export`` or the Python API (``tools/`` and the engine call it, not the reverse).
Modules are imported where used: ``import detection.analysis`` loads nothing heavy.
"""
