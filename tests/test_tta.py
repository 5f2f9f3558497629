"""Test-time augmentation (detection task) and the resumable training stream (samplers)."""
import itertools

import torch

from detection.config import get_default_config
from detection.data.samplers import GroupedBatchSampler, SkipBatches, TrainingSampler
from detection.engine.detection_task import DetectionTask
from detection.modeling.tta import flip_boxes


def _model_and_cfg():
    cfg = get_default_config()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS = "tiny", ""
    cfg.DATA.CLASSES = ["a", "b"]
    cfg.TEST.SCORE_THRESH = 0.0
    cfg.TEST.SCALES, cfg.TEST.MAX_SIZE = [96], 160
    cfg.TEST.RPN_POST_NMS_TOP_N = 40
    torch.manual_seed(0)
    task = DetectionTask()
    return task, task.build_model(cfg).eval(), cfg


def _sorted(det):
    order = torch.argsort(det["scores"], descending=True, stable=True)
    return {k: v[order] for k, v in det.items()}


def test_repeated_scale_merges_to_the_single_view_result():
    task, model, cfg = _model_and_cfg()
    images = [torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        single = task.inference_module(cfg, model.eval())(images)[0]
        cfg.TEST.SCALES = [96, 96]  # identical views: every candidate has an exact duplicate that NMS removes
        merged = task.inference_module(cfg, model)(images)[0]
    assert len(single["scores"]) > 0
    a, b = _sorted(single), _sorted(merged)
    assert torch.equal(a["labels"], b["labels"])
    torch.testing.assert_close(a["boxes"], b["boxes"])
    torch.testing.assert_close(a["scores"], b["scores"])
    assert model.roi_heads.nms_thresh == cfg.TEST.NMS and model.preprocess.test_min_size == 96  # restored


def test_flip_tta_is_mirror_symmetric():
    """The views of an image and of its mirror image are the same pair, so the merged detections mirror."""
    task, model, cfg = _model_and_cfg()
    cfg.TEST.FLIP = True
    img = torch.rand(3, 80, 112, generator=torch.Generator().manual_seed(2))
    runner = task.inference_module(cfg, model.eval())
    with torch.no_grad():
        det, mirrored = _sorted(runner([img])[0]), _sorted(runner([img.flip(-1)])[0])
    assert len(det["scores"]) > 0
    torch.testing.assert_close(det["scores"], mirrored["scores"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(det["boxes"], flip_boxes(mirrored["boxes"], 112), rtol=1e-4, atol=1e-3)


def test_sample_seeds_depend_on_the_stream_position_only():
    one = list(itertools.islice(TrainingSampler(10, seed=5, sample_seeds=True), 20))
    ranks = [list(itertools.islice(TrainingSampler(10, seed=5, rank=r, world_size=2, sample_seeds=True), 10))
             for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(one)  # the shards split the same (index, seed) stream
    assert len({s for _, s in one}) == 20
    plain = list(itertools.islice(TrainingSampler(10, seed=5), 20))
    assert [i for i, _ in one] == plain


def test_skip_batches_continues_the_grouped_stream():
    groups = [0, 1] * 5
    batches = GroupedBatchSampler(TrainingSampler(10, seed=3, sample_seeds=True), groups, 2, drop_last=True)
    full = list(itertools.islice(iter(batches), 12))
    assert list(itertools.islice(iter(SkipBatches(batches, 7)), 5)) == full[7:]
    assert all(len({groups[i] for i, _ in b}) == 1 for b in full)
