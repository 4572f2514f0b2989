"""Backbones: output shapes, contract attributes, weight loading, freezing."""

import math
import warnings

import pytest
import torch
from torch import nn

from mtlkit.errors import ConfigError
from mtlkit.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenBatchNorm2d,
    ResNet50Dilated,
    ResNetSmall,
    VGG16SSD,
)
from mtlkit.models.backbones.vgg import _subsample_classifier


def _check_contract(backbone, images):
    with torch.no_grad():
        maps = backbone.eval()(images)
    assert isinstance(maps, list)
    assert [m.shape[1] for m in maps] == backbone.out_channels
    H, W = images.shape[-2:]
    for m, s in zip(maps, backbone.strides):
        assert m.shape[0] == images.shape[0]
        assert tuple(m.shape[-2:]) == (math.ceil(H / s), math.ceil(W / s))
    assert tuple(backbone.mean) == IMAGENET_MEAN and tuple(backbone.std) == IMAGENET_STD
    return maps


@pytest.mark.parametrize("size, expected", [((240, 320), (15, 20)), ((64, 64), (4, 4)),
                                            ((100, 75), (7, 5))])
def test_resnet_small_shapes(size, expected):
    bb = ResNetSmall()
    (x,) = _check_contract(bb, torch.rand(2, 3, *size))
    assert tuple(x.shape) == (2, 256, *expected)
    assert bb.out_channels == [256] and bb.strides == [16]


def test_resnet_small_options_change_widths():
    bb = ResNetSmall(widths=[8, 16, 24, 40], blocks=[1, 2, 1, 2], stem_width=8)
    (x,) = _check_contract(bb, torch.rand(1, 3, 64, 96))
    assert tuple(x.shape) == (1, 40, 4, 6)
    assert len(bb.layer2) == 2 and len(bb.layer4) == 2


def test_resnet50_dilated_shapes_small_input():
    bb = ResNet50Dilated()
    (x,) = _check_contract(bb, torch.rand(1, 3, 64, 96))
    assert tuple(x.shape) == (1, 2048, 4, 6)
    # layer4 is dilated, not strided: no stride-2 conv, dilation 2 after the first block
    assert bb.layer4[0].conv2.stride == (1, 1) and bb.layer4[0].downsample[0].stride == (1, 1)
    assert bb.layer4[1].conv2.dilation == (2, 2) and bb.layer3[0].conv2.stride == (2, 2)


def test_vgg16_shapes_small_input():
    bb = VGG16SSD()
    c43, fc7 = _check_contract(bb, torch.rand(1, 3, 64, 64))
    assert tuple(c43.shape) == (1, 512, 8, 8) and tuple(fc7.shape) == (1, 1024, 4, 4)


def test_vgg16_ceil_mode_pool3_and_l2norm():
    bb = VGG16SSD().eval()
    assert bb.features[16].ceil_mode and not bb.features[9].ceil_mode
    assert bb.features[30].stride == 1 and bb.features[30].kernel_size == 3
    assert bb.fc6.dilation == (6, 6) and bb.fc6.out_channels == 1024
    with torch.no_grad():
        c43, fc7 = bb(torch.rand(1, 3, 76, 76))  # pool3 sees 19x19: ceil -> 10, floor -> 9
    assert tuple(c43.shape[-2:]) == (10, 10)
    # conv4_3 is L2-normalised with scale 20 per channel
    norms = c43.norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.full_like(norms[norms > 0], 20.0), atol=1e-3)


def test_registered_backbones(fresh_registry):
    reg = fresh_registry()
    assert reg.get("backbone", "resnet50") is ResNet50Dilated
    assert reg.get("backbone", "vgg16") is VGG16SSD
    assert reg.get("backbone", "resnet_small") is ResNetSmall
    for cls in (ResNet50Dilated, VGG16SSD, ResNetSmall):
        assert {"weights", "frozen_bn", "frozen_stages"} <= set(cls.defaults)
        assert cls.defaults["weights"] is None


# -- weight loading -----------------------------------------------------------


def _save(tmp_path, state, name="w.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


def test_weights_load_by_name_and_ignore_fc(tmp_path):
    src = ResNetSmall()
    state = src.state_dict()
    state["fc.weight"] = torch.zeros(10, 256)
    state["fc.bias"] = torch.zeros(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fc.* must not even warn
        dst = ResNetSmall(weights=_save(tmp_path, state))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_weights_in_checkpoint_dict(tmp_path):
    src = ResNetSmall()
    dst = ResNetSmall(weights=_save(tmp_path, {"state_dict": src.state_dict(), "epoch": 3}))
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_missing_keys_are_an_error_naming_them(tmp_path):
    state = ResNetSmall().state_dict()
    del state["layer3.0.conv2.weight"]
    del state["bn1.running_var"]
    with pytest.raises(ConfigError) as err:
        ResNetSmall(weights=_save(tmp_path, state))
    msg = str(err.value)
    assert "layer3.0.conv2.weight" in msg and "bn1.running_var" in msg
    assert "model.backbone.weights" in msg and "w.pth" in msg


def test_unexpected_keys_warn_by_name(tmp_path):
    state = ResNetSmall().state_dict()
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.warns(RuntimeWarning, match=r"layer5\.0\.conv1\.weight"):
        ResNetSmall(weights=_save(tmp_path, state))


def test_wrong_shapes_and_bad_files(tmp_path):
    state = ResNetSmall().state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    with pytest.raises(ConfigError, match=r"conv1\.weight.*\(32, 3, 7, 7\)"):
        ResNetSmall(weights=_save(tmp_path, state))
    with pytest.raises(ConfigError, match="does not exist"):
        ResNetSmall(weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        ResNetSmall(weights=str(bad))
    with pytest.raises(ConfigError, match="not a state dict"):
        ResNetSmall(weights=_save(tmp_path, {"a": 1}, "odd.pth"))


def test_vgg_fc_layers_are_optional(tmp_path):
    src = VGG16SSD()
    state = {k: v for k, v in src.state_dict().items() if k.startswith("features.")}
    dst = VGG16SSD(weights=_save(tmp_path, state))
    assert torch.equal(dst.features[28].weight, src.features[28].weight)
    assert sorted(dst.random_init) == ["conv4_3_norm.weight", "fc6.bias", "fc6.weight",
                                       "fc7.bias", "fc7.weight"]


def test_vgg_classifier_subsampling():
    # stride-0 expanded tensors: the conversion reads the right entries
    # without allocating torchvision's 400 MB classifier.
    rows = torch.arange(4096, dtype=torch.float32).view(4096, 1)
    cols = torch.arange(25088, dtype=torch.float32).view(1, 25088)
    for w6, check in ((rows.expand(4096, 25088), "out"), (cols.expand(4096, 25088), "tap")):
        out = _subsample_classifier({
            "classifier.0.weight": w6, "classifier.0.bias": torch.arange(4096.0),
            "classifier.3.weight": rows.expand(4096, 4096), "classifier.3.bias": torch.arange(4096.0)})
        fc6 = out["fc6.weight"]
        assert tuple(fc6.shape) == (1024, 512, 3, 3)
        if check == "out":
            assert torch.equal(fc6[:, 0, 0, 0], torch.arange(0, 4096, 4).float())
        else:  # input channel c, tap (a, b) of the 7x7 kernel -> (3a, 3b)
            assert fc6[0, 5, 1, 2].item() == 5 * 49 + 3 * 7 + 6
        assert torch.equal(out["fc6.bias"], torch.arange(0, 4096, 4).float())
        assert tuple(out["fc7.weight"].shape) == (1024, 1024, 1, 1)
        assert out["fc7.weight"][7, 0, 0, 0].item() == 28
    assert _subsample_classifier({"classifier.0.weight": torch.zeros(10, 10)}) == {}


# -- freezing -----------------------------------------------------------------


def test_frozen_bn_has_no_grads_and_keeps_running_stats():
    torch.manual_seed(0)
    bb = ResNetSmall(frozen_bn=True).train()
    frozen = [m for m in bb.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and not any(isinstance(m, nn.BatchNorm2d) for m in bb.modules())
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    param_ids = {id(p) for p in bb.parameters()}
    assert not any(id(t) in param_ids for m in frozen for t in (m.weight, m.bias))
    bb(torch.rand(2, 3, 64, 64))[0].square().mean().backward()
    for k, v in bb.state_dict().items():
        if "bn" in k or "downsample.1" in k:
            assert torch.equal(v, before[k]), k
    assert all(m.weight.grad is None and m.bias.grad is None for m in frozen)
    assert bb.conv1.weight.grad is not None


def test_frozen_bn_equals_eval_batchnorm():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(3, 5, 4, 4)
    assert torch.allclose(FrozenBatchNorm2d.from_batchnorm(bn)(x), bn.eval()(x), atol=1e-5)


def test_frozen_stages_freeze_params_and_bn_stats():
    bb = ResNetSmall(frozen_stages=2).train()  # stem + layer1
    for module in (bb.conv1, bb.bn1, bb.layer1):
        assert not any(p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in bb.layer2.parameters())
    assert not bb.bn1.training and not bb.layer1[0].bn1.training and bb.layer2[0].bn1.training
    stem_mean = bb.bn1.running_mean.clone()
    l2_mean = bb.layer2[0].bn1.running_mean.clone()
    bb(torch.rand(2, 3, 64, 64))
    assert torch.equal(bb.bn1.running_mean, stem_mean)
    assert not torch.equal(bb.layer2[0].bn1.running_mean, l2_mean)


def test_vgg_frozen_stages():
    bb = VGG16SSD(frozen_stages=3)
    assert not bb.features[14].weight.requires_grad  # conv3_3 (block 3)
    assert bb.features[17].weight.requires_grad  # conv4_1 (block 4)


@pytest.mark.parametrize("kwargs", [{"frozen_stages": 6}, {"frozen_stages": -1},
                                    {"widths": [32, 64, 128]}, {"blocks": [1, 1, 0, 1]},
                                    {"weights": 3}])
def test_bad_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError, match="model.backbone"):
        ResNetSmall(**kwargs)
