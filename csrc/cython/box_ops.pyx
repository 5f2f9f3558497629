# cython: boundscheck=False, wraparound=False, cdivision=True
"""numpy box utilities for evaluation and data checks (py-faster-rcnn's cython_bbox / cpu_nms, in one place).

PIXEL_OFFSET states the coordinate convention of these functions: 1.0 means VOC's inclusive integer pixels
(width = x2 - x1 + 1), the convention the VOC devkit's evaluation uses; 0.0 would be continuous coordinates.
"""
import numpy as np

cimport numpy as cnp

cnp.import_array()

PIXEL_OFFSET = 1.0
cdef double _OFFSET = 1.0


def bbox_overlaps(cnp.ndarray[cnp.float64_t, ndim=2] boxes not None,
                  cnp.ndarray[cnp.float64_t, ndim=2] query_boxes not None):
    """IoU of boxes [N, 4] and query_boxes [K, 4] (float64, x1 y1 x2 y2, inclusive pixels) -> [N, K] float64."""
    if boxes.shape[1] != 4 or query_boxes.shape[1] != 4:
        raise ValueError(f"bbox_overlaps expects [N, 4] and [K, 4] arrays, got {np.shape(boxes)} and {np.shape(query_boxes)}")
    cdef Py_ssize_t N = boxes.shape[0]
    cdef Py_ssize_t K = query_boxes.shape[0]
    cdef cnp.ndarray[cnp.float64_t, ndim=2] overlaps = np.zeros((N, K), dtype=np.float64)
    cdef double iw, ih, box_area, ua
    cdef Py_ssize_t k, n
    with nogil:
        for k in range(K):
            box_area = ((query_boxes[k, 2] - query_boxes[k, 0] + _OFFSET) *
                        (query_boxes[k, 3] - query_boxes[k, 1] + _OFFSET))
            for n in range(N):
                iw = min(boxes[n, 2], query_boxes[k, 2]) - max(boxes[n, 0], query_boxes[k, 0]) + _OFFSET
                if iw > 0:
                    ih = min(boxes[n, 3], query_boxes[k, 3]) - max(boxes[n, 1], query_boxes[k, 1]) + _OFFSET
                    if ih > 0:
                        ua = ((boxes[n, 2] - boxes[n, 0] + _OFFSET) * (boxes[n, 3] - boxes[n, 1] + _OFFSET)
                              + box_area - iw * ih)
                        overlaps[n, k] = iw * ih / ua
    return overlaps


def nms(cnp.ndarray[cnp.float32_t, ndim=2] dets not None, float thresh):
    """Greedy NMS of dets [N, 5] float32 (x1, y1, x2, y2, score; inclusive pixels) -> list of kept indices.

    A box is suppressed when its IoU with a higher-scoring kept box is > thresh. Ties in score keep the
    lower index first (stable sort).
    """
    if dets.shape[1] != 5:
        raise ValueError(f"nms expects a [N, 5] array (x1, y1, x2, y2, score), got {np.shape(dets)}")
    cdef Py_ssize_t ndets = dets.shape[0]
    cdef cnp.ndarray[cnp.float32_t, ndim=1] x1 = np.ascontiguousarray(dets[:, 0])
    cdef cnp.ndarray[cnp.float32_t, ndim=1] y1 = np.ascontiguousarray(dets[:, 1])
    cdef cnp.ndarray[cnp.float32_t, ndim=1] x2 = np.ascontiguousarray(dets[:, 2])
    cdef cnp.ndarray[cnp.float32_t, ndim=1] y2 = np.ascontiguousarray(dets[:, 3])
    cdef cnp.ndarray[cnp.float32_t, ndim=1] areas = (x2 - x1 + <float>_OFFSET) * (y2 - y1 + <float>_OFFSET)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] order = np.argsort(-dets[:, 4], kind="stable").astype(np.int64)
    cdef cnp.ndarray[cnp.uint8_t, ndim=1] suppressed = np.zeros(ndets, dtype=np.uint8)
    cdef Py_ssize_t _i, _j, i, j
    cdef float ix1, iy1, ix2, iy2, iarea, xx1, yy1, xx2, yy2, w, h, inter, ovr
    keep = []
    for _i in range(ndets):
        i = order[_i]
        if suppressed[i]:
            continue
        keep.append(i)
        ix1 = x1[i]; iy1 = y1[i]; ix2 = x2[i]; iy2 = y2[i]; iarea = areas[i]
        with nogil:
            for _j in range(_i + 1, ndets):
                j = order[_j]
                if suppressed[j]:
                    continue
                xx1 = max(ix1, x1[j]); yy1 = max(iy1, y1[j])
                xx2 = min(ix2, x2[j]); yy2 = min(iy2, y2[j])
                w = max(<float>0.0, xx2 - xx1 + <float>_OFFSET)
                h = max(<float>0.0, yy2 - yy1 + <float>_OFFSET)
                inter = w * h
                ovr = inter / (iarea + areas[j] - inter)
                if ovr > thresh:
                    suppressed[j] = 1
    return keep
