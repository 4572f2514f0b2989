"""The ROCK block: structure from options, gradient paths, eval BN folding."""

import pytest
import torch

from mtlkit.errors import ConfigError
from mtlkit.models.compose import build_model
from mtlkit.config import component_options
from mtlkit.models.rock import ConvBNReLU, RockBlock
from mtlkit.registry import get_registry

from _model_standins import make_batch, model_cfg


def aux_tasks(**groups):
    reg = get_registry()
    return {"scene": reg.get("task", "scene")("scene", {"num_classes": 5}),
            "depth": reg.get("task", "depth")("depth", {"group": groups.get("depth", 8)}),
            "normals": reg.get("task", "normals")("normals", {"group": groups.get("normals", 8)})}


def block(fusion="residual", **options):
    # the options pass the config's one check first, as build_model's do
    return RockBlock(32, aux_tasks(), get_registry().get("fusion", fusion), {},
                     **component_options(RockBlock, options, "model.block"))


def test_paper_structure_and_shapes():
    b = block(channels=16)
    assert [m.conv.kernel_size for m in b.encoder] == [(1, 1), (3, 3)]
    assert {n: h.out_channels for n, h in b.heads.items()} == {"scene": 5, "depth": 8, "normals": 24}
    assert {n: d.conv.in_channels for n, d in b.decoders.items()} == {"scene": 5, "depth": 8, "normals": 24}
    assert all(d.conv.out_channels == 32 for d in b.decoders.values())
    x = torch.randn(2, 32, 6, 8)
    out, preds = b(x)
    assert out.shape == x.shape
    assert preds["scene"].shape == (2, 5)
    assert preds["depth"].shape == (2, 1, 6, 8)
    assert preds["normals"].shape == (2, 3, 6, 8)
    assert torch.allclose(preds["normals"].norm(dim=1), torch.ones(2, 6, 8), atol=1e-5)


def test_no_decoders_for_none_fusion():
    b = block("none", channels=16)
    assert len(b.decoders) == 0 and b.shared_decoder is None
    x = torch.randn(1, 32, 4, 4)
    assert b(x)[0] is x


def test_plain_pooling_and_no_encoder():
    b = block("none", encoder=False, pooling="plain", plain_hidden=0)
    assert isinstance(b.encoder, torch.nn.Identity)
    assert b.heads["depth"].in_channels == 32 and b.heads["depth"].out_channels == 1
    assert b.heads["normals"].out_channels == 3 and b.heads["scene"].out_channels == 5
    _, preds = b(torch.randn(2, 32, 4, 4))
    assert preds["scene"].shape == (2, 5) and preds["normals"].shape == (2, 3, 4, 4)


def test_light_options():
    b = block(channels=16, separable=True, decoder="shared", shared_channels=8)
    convs = [m.conv for m in b.encoder]
    assert convs[1].groups == 16 and convs[1].kernel_size == (3, 3) and convs[2].kernel_size == (1, 1)
    assert len(b.decoders) == 0 and b.shared_decoder is not None
    assert b.fusion.names == ["shared"]
    out, _ = b(torch.randn(2, 32, 4, 4))
    assert out.shape == (2, 32, 4, 4)


def test_bad_options():
    with pytest.raises(ConfigError, match="did you mean 'channels'"):
        block(chanels=3)
    with pytest.raises(ConfigError, match="pooling"):
        block(pooling="max")


def test_conv_bn_relu_folding_matches_and_tracks_changes():
    m = ConvBNReLU(4, 6, 3)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.weight.uniform_(0.5, 2)
    m.eval()
    x = torch.randn(2, 4, 5, 5)
    reference = torch.relu(m.bn(m.conv(x)))
    with torch.no_grad():
        assert torch.allclose(m(x), reference, atol=1e-5)
        m.bn.bias.add_(1.0)  # the cache must notice
        assert torch.allclose(m(x), torch.relu(m.bn(m.conv(x))), atol=1e-5)


@pytest.mark.parametrize("fusion,options", [
    ("residual", {}), ("concat", {}), ("gated", {}),
    ("residual", {"separable": True, "decoder": "shared", "shared_channels": 8}),
    ("none", {"pooling": "plain", "encoder": False}),
])
def test_eval_block_fast_path_equals_reference(fusion, options):
    b = block(fusion, channels=16, **options)
    b.train()
    for _ in range(3):  # give the BNs non-trivial statistics
        b(torch.randn(4, 32, 5, 5) * 2 + 1)
    b.eval()
    x = torch.randn(2, 32, 5, 5)
    with torch.enable_grad():  # folding is skipped under autograd
        ref_out, ref_preds = b(x)
    with torch.no_grad():
        out, preds = b(x)
    assert torch.allclose(out, ref_out, atol=1e-4)
    for k in preds:
        assert torch.allclose(preds[k], ref_preds[k], atol=1e-4)


def _grads_after(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return model


def _any_grad(params):
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("fusion", ["residual", "concat", "gated"])
def test_detection_gradient_reaches_aux_branch_through_fusion(fusion):
    model = build_model(model_cfg(fusion))
    batch = make_batch()
    out = model(batch["image"])
    _grads_after(model, model.losses(out, batch)["tiny_detection"])
    assert _any_grad(model.block.encoder.parameters())
    assert _any_grad(model.block.decoders.parameters())
    assert _any_grad(model.backbone.parameters())


def test_none_fusion_detection_gradient_skips_aux_branch():
    model = build_model(model_cfg("none"))
    batch = make_batch()
    out = model(batch["image"])
    _grads_after(model, model.losses(out, batch)["tiny_detection"])
    assert not _any_grad(model.block.parameters())
    assert _any_grad(model.backbone.parameters())
    # the auxiliary losses do reach the backbone (through the heads)
    out = model(batch["image"])
    _grads_after(model, model.losses(out, batch)["depth"])
    assert _any_grad(model.backbone.parameters())
    assert not _any_grad(model.heads.parameters())
