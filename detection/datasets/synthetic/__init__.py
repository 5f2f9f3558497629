"""Synthetic datasets the quick start and the tests train on, since no real dataset can be downloaded everywhere.

Two modes, both seeded and byte-for-byte reproducible (same parameters and library versions -> same files):

Detection (``generate_detection_dataset``) writes the real VOC layout plus COCO JSON for the same images::

    <out>/VOC2007/JPEGImages/000001.jpg ...      (cv2.imwrite, JPEG quality 95)
    <out>/VOC2007/Annotations/000001.xml ...     (VOC XML; boxes 1-based inclusive integer pixels)
    <out>/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt   (val.txt only when --num-val > 0)
    <out>/annotations/instances_{trainval,test}.json             (+ _train/_val when --num-val > 0)
    <out>/manifest.json                          (parameters and counts; written last: the "complete" marker)
    <out>/README.txt

  The COCO image root is ``<out>/VOC2007/JPEGImages`` (``file_name`` is ``000001.jpg``): no copies, no symlinks.
  COCO boxes are ``[x, y, w, h]`` in continuous pixels with ``x = xmin - 1`` and ``w = xmax - xmin + 1`` of the
  VOC box, i.e. both describe the same pixels. In the toolkit's xyxy contract the box is
  ``[xmin - 1, ymin - 1, xmax, ymax]``. COCO category ids are deliberately non-contiguous (1, 3, 7, ...), so a
  reader that assumes ``id == index + 1`` fails loudly on this data.

  See drawing.py for what the images show.

Classification (``generate_classification_dataset``) writes an image-folder layout::

    <out>/{train,val}/<class>/<class>_00000.jpg
    <out>/manifest.json, <out>/README.txt

  Class ``k`` images are dominated by 2..4 shapes of type ``classes[k]`` (default circle vs square), sometimes
  with one small shape of another class as a distractor, on the same cluttered backgrounds.

Modules: params.py (parameters and constants), drawing.py (images, objects, boxes), writing.py (VOC XML,
COCO JSON, image folders, manifest; atomic writes).
"""

from detection.datasets.synthetic.drawing import (
    SyntheticImage,
    SyntheticObject,
    render_classification_image,
    render_detection_image,
)
from detection.datasets.synthetic.params import (
    COCO_CATEGORY_IDS,
    COCO_IMAGE_ROOT,
    DEFAULT_CLASSIFICATION_CLASSES,
    DEFAULT_DETECTION_CLASSES,
    JPEG_QUALITY,
    SHAPES,
    SYNTHETIC_VERSION,
    ClassificationParams,
    DetectionParams,
)
from detection.datasets.synthetic.writing import (
    detection_image_ids,
    generate_classification_dataset,
    generate_detection_dataset,
    read_manifest,
)

__all__ = [
    "SHAPES", "DEFAULT_DETECTION_CLASSES", "DEFAULT_CLASSIFICATION_CLASSES", "COCO_CATEGORY_IDS",
    "COCO_IMAGE_ROOT", "JPEG_QUALITY", "SYNTHETIC_VERSION",
    "DetectionParams", "ClassificationParams", "SyntheticObject", "SyntheticImage",
    "render_detection_image", "render_classification_image", "detection_image_ids",
    "generate_detection_dataset", "generate_classification_dataset", "read_manifest",
]
