"""The final detections' class-wise NMS (TEST.NMS_METHOD): hard NMS stays the detector's default bit for bit, Soft-NMS
is the compiled batched_soft_nms applied per (image, class) with its decayed scores, in the RoI heads and in the
test-time augmentation merge. The op itself is checked against the authors' reference in test_ops_soft_nms.py;
the export (torch.export keeps it, ONNX refuses naming the key) in test_export.py."""
import pytest
import torch

from detection.config import ConfigError
from detection.modeling.class_nms import class_nms
from detection.modeling.tta import merge_detections
from detection.ops import batched_nms, batched_soft_nms


def _case(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand((n, 2), generator=g) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand((n, 2), generator=g) * 60], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_hard_is_batched_nms_and_leaves_the_scores_untouched():
    boxes, scores, groups = _case()
    keep, out = class_nms(boxes, scores, groups, 0.3)
    assert torch.equal(keep, batched_nms(boxes, scores, groups, 0.3)) and out is scores


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_keeps_the_ops_boxes_with_their_decayed_scores(method):
    boxes, scores, groups = _case()
    keep, out = class_nms(boxes, scores, groups, 0.3, method, sigma=0.5, min_score=0.01)
    ref_keep, ref_scores = batched_soft_nms(boxes, scores, groups, method, 0.3, 0.5, 0.01)
    assert torch.equal(keep, ref_keep) and torch.equal(out[keep], ref_scores)
    assert len(keep) > len(batched_nms(boxes, scores, groups, 0.3))  # decayed, not dropped
    others = torch.ones_like(scores, dtype=torch.bool)
    others[keep] = False
    assert torch.equal(out[others], scores[others])
    with pytest.raises(ValueError, match="method"):
        class_nms(boxes, scores, groups, 0.3, "greedy")


def _detector(method="hard", seed=0):
    from test_detector import make_model

    return make_model(seed, **{"TEST": {"NMS_METHOD": method, "SCORE_THRESH": 0.0, "DETECTIONS_PER_IMAGE": 30,
                                        "SOFT_NMS_SIGMA": 0.4, "SOFT_NMS_MIN_SCORE": 0.002}}).eval()


def test_the_detectors_final_nms_is_the_configured_one_per_image_and_class():
    """Eval detections equal the candidates (final_nms=False) put through batched_nms / batched_soft_nms per
    (image, class) and cut to the top 30 per image: hard NMS exactly as before, Soft-NMS with decayed scores."""
    images = [torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(5)), torch.rand(3, 100, 90)]
    for method in ("hard", "linear", "gaussian"):
        model = _detector(method)
        heads = model.roi_heads
        assert (heads.nms_method, heads.soft_nms_sigma, heads.soft_nms_min_score) == (method, 0.4, 0.002)
        with torch.no_grad():
            dets = model(images)
            candidates = model(images, final_nms=False)
        for det, cand in zip(dets, candidates):
            if method == "hard":
                keep = batched_nms(cand["boxes"], cand["scores"], cand["labels"], heads.nms_thresh)[:30]
                scores = cand["scores"][keep]
            else:
                keep, scores = batched_soft_nms(cand["boxes"], cand["scores"], cand["labels"], method,
                                                heads.nms_thresh, 0.4, 0.002)
                keep, scores = keep[:30], scores[:30]
            assert len(keep) == len(det["scores"]) > 0, method
            assert torch.equal(det["labels"], cand["labels"][keep]) and torch.equal(det["boxes"], cand["boxes"][keep])
            if method == "hard":  # bit for bit
                assert torch.equal(det["scores"], scores)
            else:  # the candidates come sorted by score, the detector's in RoI order: the decay products may round
                torch.testing.assert_close(det["scores"], scores, rtol=0, atol=1e-6)


def test_soft_nms_in_the_test_time_augmentation_merge():
    from detection.config import get_default_config, merge_from_dict
    from detection.modeling.tta import DetectorWithTTA, build_tta

    views = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10]]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([1, 1])},
             {"boxes": torch.tensor([[0.0, 1, 10, 11]]), "scores": torch.tensor([0.85]), "labels": torch.tensor([2])}]
    hard = merge_detections(views, 0.3, 10)
    soft = merge_detections(views, 0.3, 10, "gaussian", 0.5, 0.001)
    assert hard["scores"].tolist() == pytest.approx([0.9, 0.85])  # the overlapping class-1 box suppressed
    boxes = torch.cat([v["boxes"] for v in views])
    keep, decayed = batched_soft_nms(boxes, torch.tensor([0.9, 0.8, 0.85]), torch.tensor([1, 1, 2]), "gaussian", 0.3,
                                     0.5, 0.001)
    assert torch.equal(soft["boxes"], boxes[keep]) and torch.equal(soft["scores"], decayed) and len(keep) == 3
    cfg = merge_from_dict(get_default_config(), {"TEST": {"SCALES": [96, 128], "NMS_METHOD": "linear",
                                                          "SOFT_NMS_SIGMA": 0.3, "SOFT_NMS_MIN_SCORE": 0.01}})
    tta = build_tta(cfg, torch.nn.Identity())
    assert isinstance(tta, DetectorWithTTA)
    assert (tta.nms_method, tta.soft_nms_sigma, tta.soft_nms_min_score) == ("linear", 0.3, 0.01)


def test_an_unknown_nms_method_is_a_config_error():
    from test_detector import small_cfg

    with pytest.raises(ConfigError, match="TEST.NMS_METHOD"):
        small_cfg(**{"TEST": {"NMS_METHOD": "soft"}})
