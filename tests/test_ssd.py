"""SSD parts: priors, extra layers, multibox head layout."""

import math

import pytest
import torch

from mtlkit.errors import ConfigError
from mtlkit.models.backbones import ResNet50Dilated, ResNetSmall, VGG16SSD
from mtlkit.models.ssd import SSDHead, make_priors, prior_scales, priors_per_cell

PAPER_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
ROCK_SIZES = [(30, 40), (15, 20), (8, 10), (4, 5), (2, 3), (1, 1)]
SSD300_SIZES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def test_priors_per_cell_layout():
    assert priors_per_cell(PAPER_RATIOS) == [4, 6, 6, 6, 4, 4]


@pytest.mark.parametrize("sizes, count", [(ROCK_SIZES, 7228), (SSD300_SIZES, 8732)])
def test_prior_counts(sizes, count):
    priors = make_priors(sizes, PAPER_RATIOS, 0.1, 0.9)
    assert tuple(priors.shape) == (count, 4)
    assert priors.min() >= 0 and priors.max() <= 1


def test_prior_geometry():
    scales = prior_scales(6, 0.1, 0.9)
    assert scales[:6] == pytest.approx([0.1, 0.26, 0.42, 0.58, 0.74, 0.9])
    assert scales[6] == pytest.approx(1.06)
    priors = make_priors(ROCK_SIZES, PAPER_RATIOS, 0.1, 0.9, clip=False).double()
    # map 0, cell (0, 0): s, sqrt(s s'), then ratio 2 both ways
    first = priors[:4]
    assert first[:, 0].tolist() == pytest.approx([0.5 / 40] * 4)
    assert first[:, 1].tolist() == pytest.approx([0.5 / 30] * 4)
    r = math.sqrt(2)
    assert first[:, 2].tolist() == pytest.approx([0.1, math.sqrt(0.1 * 0.26), 0.1 * r, 0.1 / r])
    assert first[:, 3].tolist() == pytest.approx([0.1, math.sqrt(0.1 * 0.26), 0.1 / r, 0.1 * r])
    # map 0, cell (row 2, col 5): row-major cells, priors within a cell last
    p = priors[(2 * 40 + 5) * 4]
    assert p[:2].tolist() == pytest.approx([5.5 / 40, 2.5 / 30])
    # the last map: a single cell in the centre; its wide prior is wider than the image
    last = priors[-4:]
    assert last[:, :2].flatten().tolist() == pytest.approx([0.5] * 8)
    assert last[1, 2].item() == pytest.approx(math.sqrt(0.9 * 1.06))
    assert last[2, 2].item() == pytest.approx(0.9 * r)
    clipped = make_priors(ROCK_SIZES, PAPER_RATIOS, 0.1, 0.9)
    assert clipped[-2, 2].item() == 1.0 and clipped[-2, 3].item() == pytest.approx(0.9 / r)


def test_prior_options_are_validated():
    with pytest.raises(ConfigError, match="aspect_ratios"):
        make_priors(ROCK_SIZES, PAPER_RATIOS[:5], 0.1, 0.9)
    with pytest.raises(ConfigError, match="min_scale"):
        make_priors(ROCK_SIZES, PAPER_RATIOS, 0.9, 0.1)


def _head(in_channels, num_classes=4, **kw):
    return SSDHead(in_channels, num_classes, PAPER_RATIOS, [512, 256, 256, 256, 256], **kw)


def _paper_layout(backbone, size):
    """Source-map sizes and head outputs at the paper's input size."""
    head = _head(backbone.out_channels).eval()
    with torch.no_grad():
        feats = backbone.eval()(torch.rand(1, 3, *size))
        return [tuple(m.shape[-2:]) for m in head.source_maps(feats)], head(feats)


def test_resnet50_dilated_480x640_gives_7228_priors():
    sizes, out = _paper_layout(ResNet50Dilated(), (480, 640))
    assert sizes == ROCK_SIZES
    assert tuple(out["loc"].shape) == (1, 7228, 4)
    assert tuple(out["conf"].shape) == (1, 7228, 5)
    assert tuple(out["priors"].shape) == (7228, 4)


def test_vgg16_ssd300_gives_8732_priors():
    bb = VGG16SSD()
    sizes, out = _paper_layout(bb, (300, 300))
    assert sizes == SSD300_SIZES
    assert tuple(out["loc"].shape) == (1, 8732, 4) and tuple(out["priors"].shape) == (8732, 4)
    head = _head(bb.out_channels)
    assert [layer.conv[0].out_channels for layer in head.extras.layers] == [512, 256, 256, 256]


@pytest.mark.parametrize("size", [(64, 64), (240, 320), (100, 37), (17, 200)])
def test_any_input_size_ends_in_1x1_and_priors_match(size):
    bb = ResNetSmall(widths=[8, 8, 16, 16], stem_width=8)
    head = _head(bb.out_channels, num_classes=2)
    feats = bb(torch.rand(2, 3, *size))
    out = head(feats)
    maps = head.source_maps(feats)
    assert tuple(maps[-1].shape[-2:]) == (1, 1)
    expected = sum(h * w * a for (h, w), a in zip([m.shape[-2:] for m in maps], head.anchors))
    assert out["loc"].shape == (2, expected, 4) and out["conf"].shape == (2, expected, 3)
    assert out["priors"].shape == (expected, 4)


def test_priors_are_cached_per_size():
    bb = ResNetSmall()
    head = _head(bb.out_channels)
    a = head(bb(torch.rand(1, 3, 64, 64)))["priors"]
    b = head(bb(torch.rand(1, 3, 64, 64)))["priors"]
    c = head(bb(torch.rand(1, 3, 96, 64)))["priors"]
    assert a is b and c.shape != a.shape


def test_head_output_order_matches_prior_order():
    """Prediction p must be made at the cell / shape of prior p."""
    torch.manual_seed(0)
    head = SSDHead([3], 1, [[2], [2]], [8])
    H, W = 5, 7
    ii, jj = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    feat = torch.stack([ii, jj, torch.zeros(H, W)])[None]  # channel 0 = row, 1 = column
    conv = head.loc[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for a in range(4):  # output (x, y, w, h) of anchor a = (col, row, a, 0)
            conv.weight[a * 4 + 0, 1, 1, 1] = 1.0
            conv.weight[a * 4 + 1, 0, 1, 1] = 1.0
            conv.bias[a * 4 + 2] = a
    out = head([feat])
    n0 = H * W * 4
    loc, priors = out["loc"][0, :n0], out["priors"][:n0]
    assert torch.allclose((loc[:, 0] + 0.5) / W, priors[:, 0])
    assert torch.allclose((loc[:, 1] + 0.5) / H, priors[:, 1])
    anchor = loc[:, 2].long()
    assert torch.equal(anchor, torch.arange(n0) % 4)
    # anchor 2 is the wide (ratio 2) prior, anchor 3 the tall one
    assert bool((priors[anchor == 2, 2] > priors[anchor == 2, 3]).all())
    assert bool((priors[anchor == 3, 2] < priors[anchor == 3, 3]).all())


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_extra_norms_train_with_one_image(norm):
    head = _head([16], extra_norm=norm).train()
    feats = [torch.rand(2 if norm == "batch" else 1, 16, 8, 8)]
    out = head(feats)
    out["conf"].sum().backward()
    assert torch.isfinite(out["loc"]).all()
    kinds = {type(m).__name__ for m in head.extras.modules()}
    assert ("GroupNorm" in kinds) == (norm == "group") and ("BatchNorm2d" in kinds) == (norm == "batch")


def test_head_config_errors():
    with pytest.raises(ConfigError, match="extra_norm"):
        SSDHead([256], 3, PAPER_RATIOS, [64] * 5, extra_norm="layer")
    with pytest.raises(ConfigError, match="extra_channels"):
        SSDHead([256], 3, PAPER_RATIOS, [128, 128])
    with pytest.raises(ConfigError, match="aspect_ratios"):
        SSDHead([64, 64, 64], 3, [[2], [2]], [])
    with pytest.raises(ConfigError, match="num_classes"):
        SSDHead([64], 0, PAPER_RATIOS, [64] * 5)
