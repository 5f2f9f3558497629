"""The feature pyramid path level by level against torchvision's detection modules, on small inputs, so a
mismatch says where it is: FPN features, backbone body, anchors, RPN proposals, level mapping and pooled features,
box heads and coder, the state-dict key map; then the FPN detector's contract (mixed sizes, empty images, config
errors) and the placeholder ('N/A') labels."""
from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.models.detection import anchor_utils, rpn as tv_rpn
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import poolers as tv_poolers
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork as TVFPN, LastLevelMaxPool

from detection.config import ConfigError, get_default_config, merge_from_dict
from detection.modeling.anchors import build_anchor_generator
from detection.modeling.backbone import FixedBatchNorm2d, build_backbone
from detection.modeling.box_coder import BoxCoder
from detection.modeling.box_head import ConvFCBoxHead, MLPBoxHead
from detection.modeling.build import build_model
from detection.modeling.fpn import FeaturePyramidNetwork, build_fpn_backbone
from detection.modeling.poolers import MultiScaleRoIAlign, map_roi_levels
from detection.modeling.roi_heads import RoIHeads
from detection.modeling.rpn import RegionProposalNetwork, RPNHead
from detection.modeling.torchvision_detectors import map_torchvision_detector_state

STRIDES = (4, 8, 16, 32, 64)
SIZES = ((32,), (64,), (128,), (256,), (512,))


def _randomise_bn(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.4 + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)


@pytest.mark.parametrize("norm", ["", "bn"])
def test_fpn_levels_equal_torchvision_feature_pyramid(norm):
    torch.manual_seed(0)
    chans = [8, 16, 32, 64]
    tv = TVFPN(chans, 16, extra_blocks=LastLevelMaxPool(), norm_layer=torch.nn.BatchNorm2d if norm else None)
    _randomise_bn(tv)
    ours = FeaturePyramidNetwork(chans, 16, norm=norm)
    assert set(ours.state_dict()) == set(tv.state_dict())  # torchvision's names: its state dicts load as they are
    ours.load_state_dict(tv.state_dict())
    tv.eval(), ours.eval()
    x = [torch.randn(2, c, s, s + 3) for c, s in zip(chans, (33, 17, 9, 5))]  # odd sizes: nearest upsampling crops
    expected = list(tv(OrderedDict((str(i), t) for i, t in enumerate(x))).values())
    got = ours(x)
    assert len(got) == 5 and got[-1].shape[-2:] == (3, 4)
    for level, (a, b) in enumerate(zip(got, expected)):
        assert torch.equal(a, b), f"level {level}"


def test_fpn_backbone_is_torchvision_resnet_fpn_extractor():
    """Our body (the registry's resnet18 layers) + FPN equals torchvision's BackboneWithFPN, key for key."""
    torch.manual_seed(0)
    tv = _resnet_fpn_extractor(torchvision.models.resnet18(weights=None), 5).eval()
    _randomise_bn(tv)
    neck = build_fpn_backbone(build_backbone("resnet18", None, freeze_at=0, frozen_bn=False)).eval()
    assert set(neck.state_dict()) == set(tv.state_dict())
    neck.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 96, 64)
    expected, got = tv(x), neck(x)
    assert list(got) == ["p2", "p3", "p4", "p5", "p6"] and neck.pooled_levels == ["p2", "p3", "p4", "p5"]
    assert neck.strides == dict(zip(got, STRIDES))
    for a, b in zip(got.values(), expected.values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,strides", [("mobilenet_v2", (4, 8, 16, 32)), ("vgg16", (4, 8, 16, 32)),
                                          ("tiny", (4, 8, 16))])
def test_every_backbone_reports_its_pyramid_stages(name, strides):
    bb = build_backbone(name, None, freeze_at=0, frozen_bn=False)
    assert tuple(s.stride for s in bb.stage_specs) == strides
    neck = build_fpn_backbone(bb, strides, out_channels=8).eval()
    side = 64
    with torch.no_grad():
        body_out = {}
        x = torch.randn(1, 3, side, side)
        for n, layer in neck.body.items():
            x = layer(x)
            body_out[n] = x
    for spec in bb.stage_specs:  # each reported stride and channel count is what the layer really gives
        assert body_out[spec.name].shape[1:] == (spec.channels, side // spec.stride, side // spec.stride)
    with pytest.raises(ValueError, match="strides"):
        build_fpn_backbone(bb, (2, 4))


def test_frozen_stages_of_a_batchnorm_backbone_keep_batchnorm_arithmetic():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    _randomise_bn(bn)
    bn.eval()
    fixed = FixedBatchNorm2d(8)
    fixed.load_state_dict({k: v for k, v in bn.state_dict().items()})  # num_batches_tracked dropped
    x = torch.randn(2, 8, 5, 5) * 10
    assert torch.equal(fixed(x), bn(x))
    bb = build_backbone("resnet18", None, freeze_at=2, frozen_bn=False)
    assert isinstance(bb.trunk.stem.bn1, FixedBatchNorm2d) and isinstance(bb.trunk.layer1[0].bn1, FixedBatchNorm2d)
    assert type(bb.trunk.layer2[0].bn1) is torch.nn.BatchNorm2d
    assert dict(build_fpn_backbone(bb).body.items())["bn1"] is bb.trunk.stem.bn1  # the neck shares the modules


def test_anchors_equal_torchvision_per_level_including_a_ceil_sized_top_level():
    tv = anchor_utils.AnchorGenerator(SIZES, ((0.5, 1.0, 2.0),) * 5)
    ours = build_anchor_generator("torchvision", STRIDES, SIZES, (0.5, 1.0, 2.0))
    image = torch.zeros(1, 3, 160, 224)  # P5 5 x 7 -> P6 3 x 4: torchvision's stride there is 160 // 3 = 53
    feats = [torch.zeros(1, 1, 160 // s, 224 // s) for s in STRIDES[:4]] + [torch.zeros(1, 1, 3, 4)]
    expected = tv(ImageList(image, [(150, 224)]), feats)[0]
    got = ours(feats, image.shape[-2:])
    assert torch.equal(torch.cat(got), expected)
    assert got[4][12].tolist() == [-362.0, 53.0 - 181, 362.0, 53.0 + 181]  # P6 cell (y=1, x=0), ratio 0.5
    pfr = build_anchor_generator("py-faster-rcnn", STRIDES, SIZES, (0.5, 1.0, 2.0))(feats, image.shape[-2:])
    assert pfr[0][1].tolist() == [-14.0, -14.0, 18.0, 18.0]  # py-faster-rcnn: 32 px centred on the cell centre (2, 2)


def _rpn_pair(conv_depth):
    torch.manual_seed(0)
    tv_head = tv_rpn.RPNHead(16, 3, conv_depth=conv_depth)
    with torch.no_grad():
        for p in tv_head.parameters():
            p.normal_(0, 0.2)
    tv = tv_rpn.RegionProposalNetwork(anchor_utils.AnchorGenerator(SIZES, ((0.5, 1.0, 2.0),) * 5), tv_head,
                                      0.7, 0.3, 256, 0.5, dict(training=60, testing=60),
                                      dict(training=50, testing=50), 0.7).eval()
    head = RPNHead(16, 3, conv_depth=conv_depth)
    head.load_state_dict({k.replace("conv.0.0.", "conv.") if conv_depth == 1 else k: v
                          for k, v in tv_head.state_dict().items()})
    ours = RegionProposalNetwork(build_anchor_generator("torchvision", STRIDES, SIZES, (0.5, 1.0, 2.0)), head,
                                 pre_nms_top_n=(60, 60), post_nms_top_n=(50, 50), nms_thresh=(0.7, 0.7),
                                 min_size=(1e-3, 1e-3), min_size_scaled=False).eval()
    return tv, ours


@pytest.mark.parametrize("conv_depth", [1, 2])
def test_proposals_equal_torchvision_rpn_for_a_batch_of_two_sizes(conv_depth):
    tv, ours = _rpn_pair(conv_depth)
    image = torch.zeros(2, 3, 128, 192)
    sizes = [(128, 170), (100, 192)]
    feats = OrderedDict((f"p{k + 2}", torch.randn(2, 16, -(-128 // s), -(-192 // s)) * 3)
                        for k, s in enumerate(STRIDES))
    with torch.no_grad():
        expected, _ = tv(ImageList(image, sizes), feats)
        props, valid, losses = ours(feats, torch.tensor(sizes), image_scales=torch.ones(2),
                                    image_shape=image.shape[-2:])
    assert losses == {}
    for i in range(2):
        assert torch.equal(props[i][valid[i]], expected[i]), f"image {i}"


def test_level_mapping_and_pooled_features_equal_multiscale_roialign():
    torch.manual_seed(0)
    tv = tv_poolers.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
    ours = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], [4, 8, 16, 32], 7, sampling_ratio=2, aligned=False)
    feats = OrderedDict((f"p{k + 2}", torch.randn(2, 4, 256 // s, 320 // s)) for k, s in enumerate((4, 8, 16, 32)))
    feats["p6"] = torch.randn(2, 4, 4, 5)  # an RPN-only level is ignored by both
    xy = torch.rand(60, 2) * 200
    wh = torch.cat([torch.rand(40, 2) * 60 + 2, torch.rand(20, 2) * 400 + 100])  # small and large: every level
    boxes = torch.cat([xy, xy + wh], 1)
    per_image = [boxes[:35], boxes[35:]]
    levels = map_roi_levels(boxes, 2, 5)
    assert torch.equal(levels, tv_poolers.LevelMapper(2, 5)(per_image))
    assert set(levels.tolist()) == {0, 1, 2, 3}
    assert map_roi_levels(torch.tensor([[0.0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 10, 10]]), 2, 5).tolist() \
        == [2, 1, 0]
    rois = torch.cat([torch.cat([torch.full((35, 1), 0.0), torch.full((25, 1), 1.0)]), boxes], 1)
    expected = tv(feats, per_image, [(256, 320), (240, 300)])
    assert torch.equal(ours(feats, rois), expected)


def test_box_heads_and_coder_are_torchvision_modules():
    torch.manual_seed(0)
    tv_mlp, ours_mlp = TwoMLPHead(8 * 7 * 7, 32), MLPBoxHead(8, 7, 32)
    tv_conv = FastRCNNConvFCHead((8, 7, 7), [8, 8], [32], norm_layer=torch.nn.BatchNorm2d)
    ours_conv = ConvFCBoxHead(8, 7, (8, 8), (32,), norm="bn")
    _randomise_bn(tv_conv)
    x = torch.randn(5, 8, 7, 7)
    for tv, ours in ((tv_mlp, ours_mlp), (tv_conv, ours_conv)):
        assert set(ours.state_dict()) == set(tv.state_dict())
        ours.load_state_dict(tv.state_dict())
        assert torch.equal(ours.eval()(x), tv.eval()(x))
    tv_coder, coder = TVBoxCoder((10.0, 10.0, 5.0, 5.0)), BoxCoder(weights=(10, 10, 5, 5))
    ref = torch.rand(20, 2) * 100
    ref = torch.cat([ref, ref + torch.rand(20, 2) * 50 + 1], 1)
    deltas = torch.randn(20, 3 * 4)
    assert torch.equal(coder.decode(deltas.view(20, 3, 4), ref[:, None]), tv_coder.decode(deltas, [ref]).view(20, 3, 4))
    gt = ref + torch.randn(20, 4)
    assert torch.equal(coder.encode(gt, ref), tv_coder.encode_single(gt, ref))


def test_key_map_covers_both_rpn_head_layouts():
    own = {"rpn.head.conv.weight", "rpn.head.conv.bias", "roi_heads.cls_score.weight", "backbone.body.conv1.weight"}
    new = {"rpn.head.conv.0.0.weight": 1, "rpn.head.conv.0.0.bias": 2, "roi_heads.box_predictor.cls_score.weight": 3,
           "backbone.body.conv1.weight": 4}
    assert map_torchvision_detector_state(new, own) == {"rpn.head.conv.weight": 1, "rpn.head.conv.bias": 2,
                                                        "roi_heads.cls_score.weight": 3,
                                                        "backbone.body.conv1.weight": 4}
    old = {"rpn.head.conv.weight": 1, "rpn.head.conv.bias": 2}  # torchvision's COCO v1 file: pre-v2 RPNHead names
    deep = {"rpn.head.conv.0.0.weight", "rpn.head.conv.0.0.bias", "rpn.head.conv.1.0.weight"}
    assert set(map_torchvision_detector_state(old, deep)) == {"rpn.head.conv.0.0.weight", "rpn.head.conv.0.0.bias"}
    assert map_torchvision_detector_state(old, own) == old


def fpn_cfg(**overrides):
    """tiny backbone + FPN over its stride-4/8/16 stages (P2..P5): CPU-fast."""
    cfg = get_default_config()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS, cfg.MODEL.FREEZE_AT = "tiny", "", 0
    cfg.MODEL.NECK = "fpn"
    cfg.MODEL.FPN.IN_STRIDES, cfg.MODEL.FPN.ANCHOR_SIZES, cfg.MODEL.FPN.OUT_CHANNELS = (4, 8, 16), (16, 32, 64, 128), 32
    cfg.MODEL.ROI_HEADS.BOX_HEAD, cfg.MODEL.ROI_HEADS.MLP_DIM = "mlp", 128
    cfg.POOLING_SIZE = 7
    cfg.DATA.CLASSES = ["a", "b", "c"]
    cfg.TRAIN.SCALES, cfg.TRAIN.MAX_SIZE, cfg.TEST.SCALES, cfg.TEST.MAX_SIZE = (128,), 256, (128,), 256
    cfg.TRAIN.RPN_PRE_NMS_TOP_N, cfg.TRAIN.RPN_POST_NMS_TOP_N = 300, 200
    cfg.TEST.RPN_PRE_NMS_TOP_N, cfg.TEST.RPN_POST_NMS_TOP_N = 200, 100
    cfg.TRAIN.RPN_MIN_SIZE = cfg.TEST.RPN_MIN_SIZE = 2
    cfg.TRAIN.RPN_BATCHSIZE, cfg.TRAIN.BATCH_SIZE = 128, 64
    return merge_from_dict(cfg, overrides, source="test overrides")


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


@pytest.mark.parametrize("overrides", [{}, {"ANCHOR_PLACEMENT": "torchvision", "MODEL.RPN.CONV_DEPTH": 2,
                                            "MODEL.ROI_HEADS.BOX_HEAD": "convfc", "MODEL.FPN.NORM": "bn",
                                            "MODEL.ROI_HEADS.CONV_DIMS": (16, 16),
                                            "MODEL.ROI_HEADS.BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0)}])
def test_fpn_detector_trains_on_mixed_sizes_and_empty_images_and_predicts(overrides):
    torch.manual_seed(0)
    model = build_model(fpn_cfg(**overrides))
    images = [torch.rand(3, 128, 160), torch.rand(3, 96, 128), torch.rand(3, 140, 100)]
    targets = [_target([[10, 20, 70, 90], [80, 10, 150, 60]], [1, 2]), _target([], []),
               _target([[5, 5, 30, 40]], [3])]
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box"] > 0
    sum(losses.values()).backward()
    assert model.backbone.fpn.inner_blocks[0][0].weight.grad.abs().sum() > 0
    assert model.rpn.head.cls_logits.weight.grad.abs().sum() > 0
    losses = model([torch.rand(3, 64, 64)], [_target([], [])])  # a batch without any object
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        dets = model.eval()(images)
    for det, img in zip(dets, images):
        b = det["boxes"]
        assert b.shape[1] == 4 and (b[:, 2] <= img.shape[2]).all() and (b[:, 3] <= img.shape[1]).all()


@pytest.mark.parametrize("overrides,message", [
    ({"MODEL.FPN.ANCHOR_SIZES": (32, 64)}, "ANCHOR_SIZES"),
    ({"MODEL.ROI_HEADS.BOX_HEAD": "backbone"}, "BOX_HEAD"),
    ({"MODEL.FPN.IN_STRIDES": (4, 8, 32)}, "IN_STRIDES"),
    ({"POOLING_MODE": "pool"}, "POOLING_MODE"),
])
def test_fpn_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_model(fpn_cfg(**overrides))


def test_placeholder_labels_stay_in_the_softmax_but_are_never_reported():
    torch.manual_seed(0)
    heads = RoIHeads(torch.nn.Identity(), 8, 4, 7, score_thresh=0.0, nms_thresh=0.5, detections_per_image=3,
                     reported_classes=[False, True, False, True])
    rois = torch.tensor([[0.0, 0, 0, 10, 10], [0, 20, 20, 40, 40], [0, 50, 50, 90, 90]])
    logits = torch.tensor([[0.0, 1, 5, 2], [0, 4, 3, 1], [0, 1, 6, 0.5]])
    dets = heads.detections(logits, torch.zeros(3, 16), rois, torch.tensor([[100, 100]]))[0]
    everything = RoIHeads(torch.nn.Identity(), 8, 4, 7, score_thresh=0.0, nms_thresh=0.5, detections_per_image=3)
    ref = everything.detections(logits, torch.zeros(3, 16), rois, torch.tensor([[100, 100]]))[0]
    assert ref["labels"].tolist() == [2, 2, 1]  # the top 3 of the full softmax (label 2 is a placeholder)
    assert dets["labels"].tolist() == [1] and torch.equal(dets["scores"], ref["scores"][2:])


# mAP 1.000 under AVX2 and SSE4.1 kernels, 1 and 2 threads (1.0 after ~60 of its 80 iterations); 0.000 with
# learning rate 0 (dev/quality_spread.py, 2026-12-07)
FPN_OVERFIT_MAP = 0.9


def test_fpn_overfits_generated_images():
    from test_detector import CLASSES, overfit_and_score, synthetic_images

    torch.manual_seed(0)
    images, targets = synthetic_images(4, seed=0)
    model = build_model(fpn_cfg(**{"TRAIN.USE_FLIPPED": False, "DATA.CLASSES": list(CLASSES)}))
    iters = 80  # mAP 1.0 after 60 for seeds 0, 1, 2
    overfit_and_score(model, images, targets, iters, "fpn_overfit_mAP", FPN_OVERFIT_MAP)


def test_coco_records_under_torchvision_labels_map_categories_by_name(tmp_path):
    from detection.data.build import build_detection_records
    from detection.data.categories import named_class_list
    from fixtures_data import write_coco_dataset

    names = [n for n in named_class_list("torchvision_coco") if n != "N/A"]
    own_ids = {"car": 3, "person": 7, "zebra": 12}  # the fixture's annotations use these ids
    cats = [dict(id=own_ids.get(n, 100 + k), name=n) for k, n in enumerate(names)]  # 80 categories, other ids
    path = write_coco_dataset(str(tmp_path), categories=cats)
    cfg = get_default_config()
    cfg.DATA.FORMAT, cfg.DATA.ROOT, cfg.DATA.TEST_SET = "coco", str(tmp_path), f"{path}:{tmp_path}/coco/images"
    cfg.DATA.CLASSES, cfg.DATA.CLASSES_FROM = [], "torchvision_coco"
    records = build_detection_records(cfg, is_train=False)
    assert len(records.class_names) == 90 and records.class_names[11] == "N/A"  # label 12 is an unused COCO id
    to_coco = records.meta["contiguous_to_coco_id"]  # labels are positions in torchvision's list
    assert len(to_coco) == 80 and (to_coco[1], to_coco[3], to_coco[24]) == (7, 3, 12) and 12 not in to_coco
    assert {int(lab) for r in records.records for lab in r["labels"]} <= {1, 3, 24}


def test_a_torchvision_format_file_fine_tunes_to_another_class_list(tmp_path, caplog):
    from detection.engine.checkpoint import load_model_weights

    torch.manual_seed(0)
    source = build_model(fpn_cfg(), num_classes=7)
    tv_names = {("roi_heads.box_predictor." + k[len("roi_heads."):] if k.startswith(("roi_heads.cls_score",
                 "roi_heads.bbox_pred")) else k): v for k, v in source.state_dict().items()}
    assert any(k.startswith("backbone.body.") for k in tv_names)  # torchvision's layout: recognised by its keys
    path = tmp_path / "tv_format.pth"
    torch.save(tv_names, path)
    target = build_model(fpn_cfg(), num_classes=4)
    init = target.roi_heads.cls_score.weight.clone()
    with caplog.at_level("WARNING"):
        load_model_weights(target, str(path), skip_mismatched=True)
    assert "roi_heads.cls_score.weight" in caplog.text  # the class-dependent layers keep their initialisation
    assert torch.equal(target.roi_heads.cls_score.weight, init)
    for key in ("backbone.fpn.layer_blocks.0.0.weight", "rpn.head.conv.weight", "roi_heads.box_head.fc6.weight"):
        assert torch.equal(target.state_dict()[key], source.state_dict()[key]), key
