"""VOC evaluation: the devkit's rules on hand-computed cases, a loop reference, results files, the evaluator.

Boxes given to the API are continuous xyxy (x1 = xmin - 1, x2 = xmax of VOC's 1-based inclusive pixels).
"""
import math
import os

import numpy as np
import pytest

from detection.evaluation.evaluator import EvaluationInputError
from detection.evaluation.voc import (
    ELEVEN_POINT_THRESHOLDS,
    VOCEvaluator,
    bbox_overlaps,
    default_use_07_metric,
    evaluate_voc_results,
    format_ap_table,
    load_voc_ground_truth,
    parse_voc_xml,
    read_voc_results,
    resolve_use_07_metric,
    voc_ap,
    voc_evaluate,
    write_voc_results,
)

CLASSES = ["cat", "dog"]


def gt(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    d = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return dict(boxes=boxes, labels=np.asarray(labels, np.int64), difficult=d)


def det(boxes, scores, labels):
    return dict(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), scores=np.asarray(scores, np.float32),
                labels=np.asarray(labels, np.int64))


EMPTY = det(np.zeros((0, 4)), [], [])


# --------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------------------

def test_perfect_detections_give_ap_one():
    g = [gt([[0, 0, 10, 10]], [1]), gt([[5, 5, 50, 40]], [2])]
    d = [det([[0, 0, 10, 10]], [0.9], [1]), det([[5, 5, 50, 40]], [0.8], [2])]
    r = voc_evaluate(d, g, CLASSES)
    assert r["AP"] == {"cat": 1.0, "dog": 1.0} and r["mAP"] == 1.0
    assert r["num_gt"] == {"cat": 1, "dog": 1}


def test_duplicate_detection_is_a_false_positive():
    # one object, two detections on it: the higher-scored is TP, the second a FP (multiple detection)
    # tp = [1, 0], fp = [0, 1] -> recall [1, 1], precision [1, 0.5]; area AP = 1 * 1 = 1
    r = voc_evaluate([det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.9], [1, 1])], [gt([[0, 0, 10, 10]], [1])], CLASSES)
    np.testing.assert_array_equal(r["precision"]["cat"], [1.0, 0.5])
    np.testing.assert_array_equal(r["recall"]["cat"], [1.0, 1.0])
    assert r["AP"]["cat"] == 1.0


def test_best_match_already_taken_is_a_false_positive_even_if_another_object_overlaps():
    # objects A [0,0,10,10] and B [2,0,12,10]. det1 = A (0.9) -> TP on A. det2 = [0.5,0,10.5,10] (0.8): IoU with A
    # is 9.5/10.5 = 0.905, with B 8.5/11.5 = 0.739; its best match A is taken -> FP (the devkit does not fall back
    # to B). tp = [1, 0], npos = 2 -> recall [0.5, 0.5], precision [1, 0.5]; area AP = 0.5 * 1 = 0.5
    g = [gt([[0, 0, 10, 10], [2, 0, 12, 10]], [1, 1])]
    d = [det([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [0.9, 0.8], [1, 1])]
    r = voc_evaluate(d, g, CLASSES)
    np.testing.assert_array_equal(r["precision"]["cat"], [1.0, 0.5])
    np.testing.assert_array_equal(r["recall"]["cat"], [0.5, 0.5])
    assert r["AP"]["cat"] == 0.5


def test_difficult_objects_are_neither_tp_nor_fp():
    # A [0,0,10,10] normal, B [20,20,30,30] difficult. Sorted dets: on B (0.9) ignored, on A (0.8) TP, far (0.7) FP.
    # cumulative tp [0, 1, 1], fp [0, 0, 1]; npos = 1 (B not counted) -> recall [0, 1, 1],
    # precision [0 (0/eps), 1, 0.5]; area AP = 1
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True])]
    d = [det([[20, 20, 30, 30], [0, 0, 10, 10], [60, 60, 70, 70]], [0.9, 0.8, 0.7], [1, 1, 1])]
    r = voc_evaluate(d, g, CLASSES)
    assert r["num_gt"]["cat"] == 1
    np.testing.assert_array_equal(r["recall"]["cat"], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(r["precision"]["cat"], [0.0, 1.0, 0.5])
    assert r["AP"]["cat"] == 1.0
    # a second detection of the difficult object is ignored too, not a duplicate FP
    d2 = [det([[20, 20, 30, 30], [20, 20, 30, 31], [0, 0, 10, 10]], [0.9, 0.85, 0.8], [1, 1, 1])]
    r2 = voc_evaluate(d2, g, CLASSES)
    np.testing.assert_array_equal(r2["precision"]["cat"], [0.0, 0.0, 1.0])
    # without the flag the same object counts: npos = 2 and the first detection is a TP
    r3 = voc_evaluate(d, [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])], CLASSES)
    assert r3["num_gt"]["cat"] == 2
    np.testing.assert_array_equal(r3["recall"]["cat"], [0.5, 1.0, 1.0])


def test_eleven_point_versus_area_ap():
    # npos = 4; score-sorted dets: TP, FP, TP, FP, TP
    #   cum tp [1, 1, 2, 2, 3], fp [0, 1, 1, 2, 2]
    #   recall    [.25, .25, .5, .5, .75]
    #   precision [1, .5, 2/3, .5, .6]
    # area: envelope [1, 1, 2/3, 2/3, .6, .6]; recall steps .25 each -> .25*1 + .25*2/3 + .25*.6 + .25*0 = 17/30
    # 11-point: t=0,.1,.2 -> 1; t=.3,.4,.5 -> 2/3; t=.6,.7 -> .6; t=.8,.9,1 -> 0: (3 + 2 + 1.2) / 11 = 6.2/11
    g = [gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1]), gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1])]
    far = [100, 100, 110, 110]
    d = [det([[0, 0, 10, 10], far, [20, 0, 30, 10]], [0.9, 0.8, 0.7], [1, 1, 1]),
         det([far, [0, 0, 10, 10]], [0.6, 0.5], [1, 1])]
    area = voc_evaluate(d, g, CLASSES, use_07_metric=False)
    np.testing.assert_allclose(area["recall"]["cat"], [0.25, 0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(area["precision"]["cat"], [1, 0.5, 2 / 3, 0.5, 0.6])
    assert area["AP"]["cat"] == pytest.approx(17 / 30, abs=1e-12)
    p07 = voc_evaluate(d, g, CLASSES, use_07_metric=True)
    assert p07["AP"]["cat"] == pytest.approx(6.2 / 11, abs=1e-12)


def test_eleven_point_thresholds_of_each_rule_set():
    # py-faster-rcnn: np.arange(0, 1.1, 0.1) -> 0.30000000000000004, 0.6000000000000001, 0.7000000000000001;
    # MATLAB 0:0.1:1 -> only 0.30000000000000004 (the second half is built from the end: 1 - 4 * 0.1 == 0.6)
    pf, dk = ELEVEN_POINT_THRESHOLDS["py-faster-rcnn"], ELEVEN_POINT_THRESHOLDS["devkit"]
    assert pf[3] > 0.3 and pf[6] > 0.6 and pf[7] > 0.7 and dk[3] > 0.3
    assert dk[6] == 0.6 and dk[7] == 0.7 and dk.tolist()[:3] == [0.0, 0.1, 0.2] and dk.tolist()[8:] == [0.8, 0.9, 1.0]
    # a recall of exactly 3/10 misses the 0.3 point in both references
    rec, prec = np.array([0.1, 0.2, 3 / 10]), np.ones(3)
    assert voc_ap(rec, prec, True) == voc_ap(rec, prec, True, rules="devkit") == 1 / 11 + 1 / 11 + 1 / 11
    # recalls of exactly 6/10 and 7/10: the devkit reaches both points, py-faster-rcnn only 0.6 (via 0.7 >= 0.6000..1)
    rec, prec = np.array([6 / 10, 7 / 10]), np.ones(2)
    assert voc_ap(rec, prec, True, rules="devkit") == pytest.approx(8 / 11, abs=1e-15)
    assert voc_ap(rec, prec, True) == pytest.approx(7 / 11, abs=1e-15)
    with pytest.raises(ValueError, match="unknown VOC rules 'matlab'"):
        voc_ap(rec, prec, True, rules="matlab")


def test_recall_of_exactly_0_3_and_iou_of_exactly_0_5_pin_both_rule_sets():
    # ten objects (VOC 1..100 x 1..10 in ten images); three detections hit objects exactly (recall 3/10), a fourth,
    # scored lower, covers half of another object: IoU 500 / 1000 = 0.5 exactly.
    #   py-faster-rcnn: IoU > 0.5 fails -> FP; recall 0.3 < 0.30000000000000004 -> points 0, .1, .2 -> AP 3/11
    #   devkit:         IoU >= 0.5 -> TP; recall 0.4 reaches 0, .1, .2, .30000000000000004, .4 -> AP 5/11
    g = [gt([[0, 0, 100, 10]], [1]) for _ in range(10)]
    d = [det([[0, 0, 100, 10]], [0.9 - 0.1 * i], [1]) for i in range(3)]
    d += [det([[0, 0, 50, 10]], [0.5], [1])] + [EMPTY] * 6
    pf = voc_evaluate(d, g, CLASSES, use_07_metric=True)
    dk = voc_evaluate(d, g, CLASSES, use_07_metric=True, rules="devkit")
    assert pf["recall"]["cat"][-1] == 0.3 and dk["recall"]["cat"][-1] == 0.4
    assert pf["AP"]["cat"] == 1 / 11 + 1 / 11 + 1 / 11 == _voc_eval_py(d, g, 1, 0.5, True)[0]
    assert dk["AP"]["cat"] == pytest.approx(5 / 11, abs=1e-15) and dk["AP"]["cat"] == _vocevaldet_m(d, g, 1, 0.5,
                                                                                                       True)[0]
    # the area metric sees the IoU rule only: 0.3 * 1 vs 0.4 * 1
    assert voc_evaluate(d, g, CLASSES)["AP"]["cat"] == pytest.approx(0.3, abs=1e-15)
    assert voc_evaluate(d, g, CLASSES, rules="devkit")["AP"]["cat"] == pytest.approx(0.4, abs=1e-15)


def test_devkit_precision_is_nan_while_only_ignored_detections_were_seen():
    # VOCevaldet.m: prec = tp ./ (fp + tp) is 0/0 = NaN before the first TP/FP, and MATLAB's max skips NaN;
    # voc_eval.py divides by max(tp + fp, eps) -> 0
    g = [gt([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 1], [True, False])]
    d = [det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 1])]
    pf, dk = voc_evaluate(d, g, CLASSES, use_07_metric=True), voc_evaluate(d, g, CLASSES, 0.5, True, "devkit")
    np.testing.assert_array_equal(pf["precision"]["cat"], [0.0, 1.0])
    assert math.isnan(dk["precision"]["cat"][0]) and dk["precision"]["cat"][1] == 1.0
    assert dk["AP"]["cat"] == pf["AP"]["cat"] == _voc_eval_py(d, g, 1, 0.5, True)[0] == _vocevaldet_m(d, g, 1, 0.5,
                                                                                                          True)[0]
    # every detection ignored: the 11-point max over NaNs is NaN in MATLAB, 0 in voc_eval.py
    d = [det([[0, 0, 10, 10]], [0.9], [1])]
    assert math.isnan(voc_evaluate(d, g, CLASSES, 0.5, True, "devkit")["AP"]["cat"])
    assert math.isnan(_vocevaldet_m(d, g, 1, 0.5, True)[0])
    assert voc_evaluate(d, g, CLASSES, 0.5, True)["AP"]["cat"] == 0.0 == _voc_eval_py(d, g, 1, 0.5, True)[0]
    assert voc_evaluate(d, g, CLASSES, 0.5, False, "devkit")["AP"]["cat"] == 0.0 == _vocevaldet_m(d, g, 1, 0.5,
                                                                                                  False)[0]


def test_iou_at_the_threshold_with_inclusive_pixels():
    # object: VOC pixels xmin=1..xmax=100, ymin=1..ymax=10 (100 x 10), continuous [0, 0, 100, 10].
    # detection VOC 1..50 (50 px wide, continuous [0, 0, 50, 10]): IoU = 500 / 1000 = 0.5 exactly -> not > 0.5: FP
    g = [gt([[0, 0, 100, 10]], [1])]
    at = [det([[0, 0, 50, 10]], [0.9], [1])]
    assert bbox_overlaps(np.array([[1, 1, 50, 10.0]]), np.array([[1, 1, 100, 10.0]]))[0, 0] == 0.5
    assert voc_evaluate(at, g, CLASSES)["AP"]["cat"] == 0.0
    assert voc_evaluate(at, g, CLASSES, iou_thresh=0.49)["AP"]["cat"] == 1.0
    # the MATLAB devkit's `ovmax >= minoverlap`
    assert voc_evaluate(at, g, CLASSES, rules="devkit")["AP"]["cat"] == 1.0
    # one more pixel: 51 / 100 > 0.5 -> TP
    assert voc_evaluate([det([[0, 0, 51, 10]], [0.9], [1])], g, CLASSES)["AP"]["cat"] == 1.0


def test_inclusive_pixel_iou():
    # single pixels: VOC [5,5,5,5] is a 1x1 box, IoU with itself 1
    assert bbox_overlaps(np.array([[5, 5, 5, 5.0]]), np.array([[5, 5, 5, 5.0]]))[0, 0] == 1.0
    # VOC boxes sharing the column x=10: 1 x 10 pixels of overlap out of 100 + 100 - 10
    ov = bbox_overlaps(np.array([[1, 1, 10, 10.0]]), np.array([[10, 1, 19, 10.0], [11, 1, 20, 10.0]]))
    np.testing.assert_array_equal(ov, [[10 / 190, 0.0]])


def test_empty_detections():
    g = [gt([[0, 0, 10, 10]], [1]), gt([[0, 0, 10, 10]], [2])]
    r = voc_evaluate([EMPTY, EMPTY], g, CLASSES)
    assert r["AP"] == {"cat": 0.0, "dog": 0.0} and r["mAP"] == 0.0
    assert r["precision"]["cat"].shape == (0,) and r["recall"]["dog"].shape == (0,)
    assert voc_evaluate([EMPTY, EMPTY], g, CLASSES, use_07_metric=True)["mAP"] == 0.0


def test_class_without_detections_has_ap_zero():
    g = [gt([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2])]
    r = voc_evaluate([det([[0, 0, 10, 10]], [0.9], [1])], g, CLASSES)
    assert r["AP"] == {"cat": 1.0, "dog": 0.0} and r["mAP"] == 0.5


def test_class_without_ground_truth_is_nan_and_left_out_of_the_map():
    g = [gt([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2], [False, True])]  # dog: only a difficult object
    d = [det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [1, 2])]
    r = voc_evaluate(d, g, CLASSES)
    assert r["AP"]["cat"] == 1.0 and math.isnan(r["AP"]["dog"]) and r["mAP"] == 1.0
    assert r["num_gt"]["dog"] == 0
    assert math.isnan(voc_evaluate([EMPTY], [gt(np.zeros((0, 4)), [])], CLASSES)["mAP"])


def test_labels_only_match_their_class():
    g = [gt([[0, 0, 10, 10]], [2])]
    r = voc_evaluate([det([[0, 0, 10, 10]], [0.9], [1])], g, CLASSES)
    assert r["AP"]["dog"] == 0.0 and math.isnan(r["AP"]["cat"])


def test_score_ties_keep_input_order_with_the_devkit_rules():
    # equal scores: MATLAB's stable sort keeps (image, detection) order. FP then TP: precision [0, .5] -> AP .5;
    # TP then FP: precision [1, .5] -> AP 1. (voc_eval.py's np.argsort(-confidence) promises no tie order.)
    far, hit = [50, 50, 60, 60], [0, 0, 10, 10]
    g = [gt(np.zeros((0, 4)), []), gt([hit], [1])]
    r = voc_evaluate([det([far], [0.5], [1]), det([hit], [0.5], [1])], g, CLASSES, rules="devkit")
    np.testing.assert_array_equal(r["precision"]["cat"], [0.0, 0.5])
    assert r["AP"]["cat"] == 0.5
    g2 = [g[1], g[0]]
    d2 = [det([hit], [0.5], [1]), det([far], [0.5], [1])]
    assert voc_evaluate(d2, g2, CLASSES, rules="devkit")["AP"]["cat"] == 1.0


def test_torch_inputs_are_accepted():
    torch = pytest.importorskip("torch")
    g = [dict(boxes=torch.tensor([[0.0, 0, 10, 10]]), labels=torch.tensor([1]), difficult=torch.tensor([False]))]
    d = [dict(boxes=torch.tensor([[0.0, 0, 10, 10]]), scores=torch.tensor([0.9]), labels=torch.tensor([1]))]
    assert voc_evaluate(d, g, CLASSES)["AP"]["cat"] == 1.0


def test_bad_inputs_raise():
    g = [gt([[0, 0, 10, 10]], [1])]
    with pytest.raises(ValueError, match="1 images"):
        voc_evaluate([EMPTY, EMPTY], g, CLASSES)
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        voc_evaluate([det([[0, 0, 1, 1]], [0.5], [0])], g, CLASSES)
    with pytest.raises(ValueError, match="differ in length"):
        voc_evaluate([dict(boxes=np.zeros((2, 4)), scores=np.zeros(1), labels=np.ones(2, int))], g, CLASSES)


# --------------------------------------------------------------------------------------------------------------
# Against literal transcriptions of the two references, on random data
# --------------------------------------------------------------------------------------------------------------

def _class_records(dets, gts, c):
    """The references' inputs for class c: per-image gt (VOC inclusive bbox, difficult, det flags), npos, and the
    class's detection lines in results-file order (image order, then detection order) as (image, score, bbox)."""
    recs, npos = [], 0
    for g in gts:
        b, l, d = (np.asarray(g[k]) for k in ("boxes", "labels", "difficult"))
        m = l == c
        recs.append(dict(bbox=[[x1 + 1, y1 + 1, x2, y2] for x1, y1, x2, y2 in b[m].tolist()],
                         difficult=d[m].tolist(), det=[False] * int(m.sum())))
        npos += int((~d[m]).sum())
    lines = [(i, s, [x1 + 1, y1 + 1, x2, y2]) for i, e in enumerate(dets)
             for (x1, y1, x2, y2), s, lab in zip(e["boxes"].tolist(), e["scores"].tolist(), e["labels"].tolist())
             if lab == c]
    return recs, npos, lines


def _voc_eval_py(dets, gts, c, ovthresh, use_07_metric):
    """Transcription of py-faster-rcnn's lib/datasets/voc_eval.py (voc_eval + voc_ap), as detectron2 copies it."""
    class_recs, npos, lines = _class_records(dets, gts, c)
    image_ids = [x[0] for x in lines]
    confidence = np.array([float(x[1]) for x in lines])
    BB = np.array([[float(z) for z in x[2]] for x in lines]).reshape(-1, 4)
    # sort by confidence
    sorted_ind = np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    # go down dets and mark TPs and FPs
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = np.array(R["bbox"]).reshape(-1, 4).astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1., 0.)
            ih = np.maximum(iymax - iymin + 1., 0.)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) +
                   (BBGT[:, 2] - BBGT[:, 0] + 1.) * (BBGT[:, 3] - BBGT[:, 1] + 1.) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.
        else:
            fp[d] = 1.
    # compute precision recall
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    # avoid divide by zero in case the first detection matches a difficult ground truth
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:  # voc_ap(rec, prec, use_07_metric=True)
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.
    else:
        mrec = np.concatenate(([0.], rec, [1.]))
        mpre = np.concatenate(([0.], prec, [0.]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap, rec, prec


def _matlab_max(values):
    """MATLAB's max of a vector: [] when empty, NaN entries skipped, NaN only when all are NaN."""
    values = [v for v in values]
    if not values:
        return None
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


def _vocevaldet_m(dets, gts, c, minoverlap, use_07_metric):
    """Transcription of the MATLAB devkit's VOCevaldet.m (VOC2007: the 11-point loop; VOC2010+: VOCap.m)."""
    gt, npos, lines = _class_records(dets, gts, c)
    ids = [x[0] for x in lines]
    confidence = [x[1] for x in lines]
    BB = [x[2] for x in lines]
    # sort detections by decreasing confidence: [sc,si]=sort(-confidence) is stable
    si = sorted(range(len(confidence)), key=lambda k: -confidence[k])
    ids = [ids[k] for k in si]
    BB = [BB[k] for k in si]
    nd = len(confidence)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        i = ids[d]
        bb = BB[d]
        ovmax = -math.inf
        jmax = -1
        for j, bbgt in enumerate(gt[i]["bbox"]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw = bi[2] - bi[0] + 1
            ih = bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                # compute overlap as area of intersection / area of union
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                      + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax = ov
                    jmax = j
        # assign detection as true positive/don't care/false positive
        if ovmax >= minoverlap:
            if not gt[i]["difficult"][jmax]:
                if not gt[i]["det"][jmax]:
                    tp[d] = 1  # true positive
                    gt[i]["det"][jmax] = True
                else:
                    fp[d] = 1  # false positive (multiple detection)
        else:
            fp[d] = 1  # false positive
    # compute precision/recall
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)
    if use_07_metric:
        ap = 0.0
        # MATLAB's colon 0:0.1:1 (colonop): first half k*0.1 from the start, second half 1-(10-k)*0.1 from the end
        for t in [k * 0.1 for k in range(6)] + [1 - (10 - k) * 0.1 for k in range(6, 11)]:
            p = _matlab_max(prec[rec >= t].tolist())
            if p is None:
                p = 0
            ap = ap + p / 11
    else:  # VOCap.m
        mrec = [0.0] + rec.tolist() + [1.0]
        mpre = [0.0] + prec.tolist() + [0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = _matlab_max([mpre[i], mpre[i + 1]])
        i = [k + 1 for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k]]
        ap = np.sum([(mrec[k] - mrec[k - 1]) * mpre[k] for k in i])
    return ap, rec, prec


@pytest.mark.parametrize("use_07", [False, True])
@pytest.mark.parametrize("rules", ["py-faster-rcnn", "devkit"])
def test_matches_the_transcribed_references_on_random_data(use_07, rules):
    rng = np.random.default_rng(0)
    dets, gts = [], []
    for _ in range(40):
        G = int(rng.integers(0, 6))
        xy = rng.integers(0, 60, size=(G, 2))
        gb = np.concatenate([xy, xy + rng.integers(4, 40, size=(G, 2))], 1).astype(np.float32)
        gl = rng.integers(1, 4, size=G)
        gd = rng.random(G) < 0.2
        gts.append(gt(gb, gl, gd))
        # detections: jittered copies of objects (some duplicated) plus random boxes; scores with ties
        src = gb[rng.integers(0, G, size=2 * G)] if G else np.zeros((0, 4), np.float32)
        jit = src + rng.integers(-4, 5, size=src.shape)
        rnd_xy = rng.integers(0, 80, size=(3, 2))
        rnd = np.concatenate([rnd_xy, rnd_xy + rng.integers(3, 30, size=(3, 2))], 1)
        db = np.concatenate([jit, rnd]).astype(np.float32)
        dl = np.concatenate([gl[rng.integers(0, G, size=2 * G)] if G else np.zeros(0, int), rng.integers(1, 4, size=3)])
        ds = np.round(rng.random(len(db)), 1).astype(np.float32)
        dets.append(det(db, ds, dl))
    names = ["a", "b", "c"]
    reference = _voc_eval_py if rules == "py-faster-rcnn" else _vocevaldet_m
    r = voc_evaluate(dets, gts, names, use_07_metric=use_07, rules=rules)
    for c, name in enumerate(names, start=1):
        ap, rec, prec = reference(dets, gts, c, 0.5, use_07)
        np.testing.assert_array_equal(r["recall"][name], rec)
        np.testing.assert_array_equal(r["precision"][name], prec)
        assert r["AP"][name] == ap  # bit for bit
        assert 0 < r["AP"][name] < 1


def test_overlaps_match_a_loop_reference():
    rng = np.random.default_rng(1)
    a = np.round(rng.random((50, 2)) * 100, 1)
    b = np.round(rng.random((30, 2)) * 100, 1)
    boxes = np.concatenate([a, a + rng.random((50, 2)) * 50], 1)
    query = np.concatenate([b, b + rng.random((30, 2)) * 50], 1)
    query[3] = boxes[5]  # an identical pair: IoU 1
    ref = np.array([[_iou_loop(x, q) for q in query] for x in boxes])
    got = bbox_overlaps(boxes, query)
    assert got.shape == (50, 30) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)
    assert got[5, 3] == 1.0
    # Touching boxes overlap by one inclusive pixel column: [0, 9] and [9, 19] share x = 9.
    touching = bbox_overlaps(np.array([[0.0, 0, 9, 9]]), np.array([[9.0, 0, 19, 9]]))
    np.testing.assert_allclose(touching, [[10 / (100 + 110 - 10)]])
    assert bbox_overlaps(np.zeros((0, 4)), query).shape == (0, 30)
    np.testing.assert_array_equal(bbox_overlaps(boxes[::2], query[::-1]), ref[::2, ::-1])  # strided views
    for bad in (np.zeros((3, 5)), np.zeros((4, 5)), np.zeros((2, 2, 4))):
        with pytest.raises(ValueError, match="\\[N, 4\\]"):
            bbox_overlaps(bad, query)


def test_overlaps_with_pixel_offset_zero_are_the_torch_iou():
    torch = pytest.importorskip("torch")
    from detection.ops import box_iou

    rng = np.random.default_rng(2)
    xy = rng.random((40, 2)) * 100
    boxes = np.concatenate([xy, xy + 1 + rng.random((40, 2)) * 60], 1)
    want = box_iou(torch.from_numpy(boxes[:25]), torch.from_numpy(boxes[10:])).numpy()
    np.testing.assert_allclose(bbox_overlaps(boxes[:25], boxes[10:], pixel_offset=0.0), want, rtol=1e-12, atol=0)
    # continuous boxes that only touch do not overlap; inclusive ones share a pixel column
    touch = np.array([[0.0, 0, 10, 10]]), np.array([[10.0, 0, 20, 10]])
    assert bbox_overlaps(*touch, pixel_offset=0.0)[0, 0] == 0.0 and bbox_overlaps(*touch)[0, 0] > 0


def _iou_loop(b, g):
    iw = min(b[2], g[2]) - max(b[0], g[0]) + 1
    ih = min(b[3], g[3]) - max(b[1], g[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / ((b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih)


# --------------------------------------------------------------------------------------------------------------
# Results files
# --------------------------------------------------------------------------------------------------------------

def test_results_files_round_trip(tmp_path):
    ids = ["000001", "000002", "000003"]
    dets = [det([[0, 0, 10, 20], [5.5, 6, 30.3, 40]], [0.9, 0.123456], [1, 2]), EMPTY,
            det([[1, 2, 3, 4]], [0.5], [1])]
    paths = write_voc_results(dets, ids, CLASSES, str(tmp_path), "test")
    assert [os.path.basename(p) for p in paths] == ["comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    # 1-based inclusive: xmin = x1 + 1, xmax = x2
    assert open(paths[0]).read().splitlines() == ["000001 0.900000 1.0 1.0 10.0 20.0",
                                                  "000003 0.500000 2.0 3.0 3.0 4.0"]
    assert open(paths[1]).read().splitlines() == ["000001 0.123456 6.5 7.0 30.3 40.0"]
    back = read_voc_results(str(tmp_path), "test", CLASSES, image_ids=ids)
    assert list(back) == ids
    np.testing.assert_allclose(back["000001"]["boxes"], [[0, 0, 10, 20], [5.5, 6, 30.3, 40]], atol=1e-5)
    np.testing.assert_allclose(back["000001"]["scores"], [0.9, 0.123456], atol=1e-6)
    np.testing.assert_array_equal(back["000001"]["labels"], [1, 2])
    assert back["000002"]["boxes"].shape == (0, 4) and back["000002"]["boxes"].dtype == np.float32
    np.testing.assert_allclose(back["000003"]["boxes"], [[1, 2, 3, 4]])
    # without image ids: the images met, in order
    assert list(read_voc_results(str(tmp_path), "test", CLASSES)) == ["000001", "000003"]


@pytest.mark.parametrize("line,message", [
    ("000001 0.5 1 1 10", "expected 'image_id score xmin ymin xmax ymax'"),
    ("000001 high 1 1 10 10", "non-numeric"),
    ("000001 nan 1 1 10 10", "non-finite"),
    ("999999 0.5 1 1 10 10", "unknown image id '999999'"),
])
def test_malformed_results_lines_name_file_and_line(tmp_path, line, message):
    (tmp_path / "comp4_det_test_cat.txt").write_text(f"000001 0.9 1 1 10 10\n\n{line}\n")
    (tmp_path / "comp4_det_test_dog.txt").write_text("")
    with pytest.raises(EvaluationInputError, match=r"comp4_det_test_cat.txt:3: " + message):
        read_voc_results(str(tmp_path), "test", CLASSES, image_ids=["000001"])


def test_missing_results_file(tmp_path):
    (tmp_path / "comp4_det_test_cat.txt").write_text("")
    with pytest.raises(EvaluationInputError, match="comp4_det_test_dog.txt: results file not found"):
        read_voc_results(str(tmp_path), "test", CLASSES)


# --------------------------------------------------------------------------------------------------------------
# VOC folders and the evaluator
# --------------------------------------------------------------------------------------------------------------

def write_voc(root, objects_by_image, split="test", size=(100, 80)):
    """A tiny VOC year folder: Annotations/<id>.xml and ImageSets/Main/<split>.txt.

    objects_by_image: {image_id: [(name, xmin, ymin, xmax, ymax, difficult), ...]} in VOC 1-based pixels.
    """
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
    for image_id, objects in objects_by_image.items():
        objs = "".join(
            f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{int(d)}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for n, x1, y1, x2, y2, d in objects)
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(f"<annotation><folder>VOC</folder><filename>{image_id}.jpg</filename><size><width>{size[0]}"
                    f"</width><height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")
    with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in objects_by_image))
    return root


VOC_OBJECTS = {
    "000001": [("dog", 1, 1, 10, 10, 0), ("cat", 21, 21, 40, 40, 0)],
    "000002": [("dog", 11, 11, 50, 50, 1), ("dog", 51, 1, 90, 30, 0)],
    "000003": [],
}


def test_parse_and_load_ground_truth(tmp_path):
    root = write_voc(str(tmp_path / "VOC2007"), VOC_OBJECTS)
    p = parse_voc_xml(os.path.join(root, "Annotations", "000001.xml"))
    assert p["width"] == 100 and p["height"] == 80
    assert p["objects"][0] == dict(name="dog", bbox=[1.0, 1.0, 10.0, 10.0], difficult=False)
    ids, g, names = load_voc_ground_truth(root, "test")
    assert ids == ["000001", "000002", "000003"] and names == ["cat", "dog"]
    np.testing.assert_array_equal(g[0]["boxes"], [[0, 0, 10, 10], [20, 20, 40, 40]])  # x1 = xmin - 1, x2 = xmax
    np.testing.assert_array_equal(g[0]["labels"], [2, 1])
    np.testing.assert_array_equal(g[1]["difficult"], [True, False])
    assert g[2]["boxes"].shape == (0, 4)
    _, g_dog, _ = load_voc_ground_truth(root, "test", ["dog"])
    np.testing.assert_array_equal(g_dog[0]["labels"], [1])


def test_bad_annotations(tmp_path):
    root = write_voc(str(tmp_path / "VOC2007"), {"000001": [("dog", 1, 1, 10, 10, 0)]})
    (tmp_path / "VOC2007" / "Annotations" / "000001.xml").write_text("<annotation><object>")
    with pytest.raises(EvaluationInputError, match="000001.xml: malformed XML"):
        load_voc_ground_truth(root, "test")
    (tmp_path / "VOC2007" / "Annotations" / "000001.xml").write_text(
        "<annotation><object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(EvaluationInputError, match="000001.xml: missing <ymin>"):
        load_voc_ground_truth(root, "test")
    os.remove(tmp_path / "VOC2007" / "Annotations" / "000001.xml")
    with pytest.raises(EvaluationInputError, match="000001.xml: annotation file not found"):
        load_voc_ground_truth(root, "test")
    with pytest.raises(EvaluationInputError, match="val.txt: split file not found"):
        load_voc_ground_truth(root, "val")


def test_default_07_metric_follows_the_year():
    assert default_use_07_metric("data/VOCdevkit/VOC2007") and default_use_07_metric("VOCdevkit/VOC2007/")
    assert not default_use_07_metric("VOCdevkit/VOC2012") and not default_use_07_metric("my_data")


def test_results_files_scored_like_the_arrays(tmp_path):
    root = write_voc(str(tmp_path / "VOC2007"), VOC_OBJECTS)
    ids, g, names = load_voc_ground_truth(root, "test")
    dets = [det([[0, 0, 10, 10], [20, 20, 40, 39], [0, 0, 9, 10]], [0.9, 0.8, 0.7], [2, 1, 2]),
            det([[10, 10, 50, 50], [50, 0, 90, 30], [0, 0, 20, 20]], [0.95, 0.6, 0.65], [2, 2, 1]),
            det([[5, 5, 20, 20]], [0.3], [1])]
    write_voc_results(dets, ids, names, str(tmp_path / "res"), "test")
    for use_07 in (False, True):
        for rules in ("py-faster-rcnn", "devkit"):
            files = evaluate_voc_results(root, "test", str(tmp_path / "res"), use_07_metric=use_07, rules=rules)
            arrays = voc_evaluate(dets, g, names, use_07_metric=use_07, rules=rules)
            assert files["AP"] == arrays["AP"] and files["mAP"] == arrays["mAP"]
            assert files["voc_rules"] == rules and files["voc_metric"] == ("11-point" if use_07 else "area")
    assert evaluate_voc_results(root, "test", str(tmp_path / "res"))["use_07_metric"] is True  # VOC2007


def test_voc_evaluator_with_a_voc_folder(tmp_path, caplog):
    root = write_voc(str(tmp_path / "VOC2007"), VOC_OBJECTS)
    out = tmp_path / "out"
    ev = VOCEvaluator(root, "test", output_dir=str(out), plots=True)
    assert ev.use_07_metric is True
    ev.reset()
    records = [dict(image_id=i) for i in ["000001", "000002", "000003"]]
    outputs = [det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [2, 1]),
               det([[10, 10, 50, 50], [50, 0, 90, 30]], [0.9, 0.8], [2, 2]),
               det([[0, 0, 5, 5]], [0.1], [1])]
    ev.process(records[:2], outputs[:2])
    ev.process(records[2:], outputs[2:])
    with caplog.at_level("INFO", logger="detection.evaluation.voc"):
        metrics = ev.evaluate()
    # cat: TP then FP -> AP 1 (11-point); dog: the difficult object's detection is ignored, two TPs -> AP 1
    # (11 * (1 / 11) accumulated as the devkit does is 1.0000000000000002)
    assert set(metrics) == {"mAP", "AP", "voc_metric", "voc_rules"}
    assert metrics["voc_metric"] == "11-point" and metrics["voc_rules"] == "py-faster-rcnn"  # VOC2007: auto
    assert "VOC07 11-point AP, py-faster-rcnn rules (IoU > 0.5)" in caplog.text
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx({"cat": 1.0, "dog": 1.0})
    assert "mAP" in caplog.text and "100.00" in caplog.text
    assert sorted(os.listdir(out)) == ["comp4_det_test_cat.txt", "comp4_det_test_dog.txt", "pr_cat.png", "pr_dog.png"]
    assert open(out / "pr_cat.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    ev.reset()
    ev.process([dict(image_id="nope")], [EMPTY])
    with pytest.raises(EvaluationInputError, match="not in split"):
        ev.evaluate()


@pytest.mark.parametrize("year, value, want", [
    ("2007", "auto", True), ("2012", "auto", False), ("2012", None, False), ("2012", "true", True),
    ("2007", "false", False), ("2012", True, True), ("2007", False, False)])
def test_voc_07_metric_choices_follow_the_year_rule(tmp_path, year, value, want):
    root = write_voc(str(tmp_path / f"VOC{year}"), VOC_OBJECTS)
    ev = VOCEvaluator(root, "test", use_07_metric=value, rules="devkit")
    assert ev.use_07_metric is want and resolve_use_07_metric(value, root) is want
    ev.process([dict(image_id="000001")], [det([[0, 0, 10, 10]], [0.9], [2])])
    m = ev.evaluate()
    assert m["voc_metric"] == ("11-point" if want else "area") and m["voc_rules"] == "devkit"
    with pytest.raises(ValueError, match="expected one of \\['auto', 'true', 'false'\\]"):
        VOCEvaluator(root, "test", use_07_metric="yes")
    with pytest.raises(ValueError, match="unknown VOC rules"):
        VOCEvaluator(root, "test", rules="matlab")


def test_voc_evaluator_with_ground_truth_from_records():
    ev = VOCEvaluator(class_names=CLASSES, use_07_metric=False)
    records = [dict(image_id="a", **gt([[0, 0, 10, 10]], [1])), dict(image_id="b", **gt([[0, 0, 10, 10]], [2], [True]))]
    ev.process(records, [det([[0, 0, 10, 10]], [0.9], [1]), det([[0, 0, 10, 10]], [0.9], [2])])
    m = ev.evaluate()
    assert m["mAP"] == 1.0 and m["AP"]["cat"] == 1.0 and math.isnan(m["AP"]["dog"])
    assert VOCEvaluator(class_names=CLASSES).use_07_metric is False  # auto without a VOC folder: area


def test_ap_table():
    text = format_ap_table({"cat": 0.5, "pottedplant": float("nan")}, 0.5, {"cat": 3, "pottedplant": 0}, title="T")
    lines = text.splitlines()
    assert lines[0] == "T"
    assert lines[1].split() == ["class", "AP", "(%)", "#gt"]
    assert lines[3].split() == ["cat", "50.00", "3"] and lines[4].split() == ["pottedplant", "n/a", "0"]
    assert lines[-1].split() == ["mAP", "50.00", "3"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned
