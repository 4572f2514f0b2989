"""Fusions: each computes the formula it documents; eval fast paths match."""

import pytest
import torch

from mtlkit.config import component_options
from mtlkit.errors import ConfigError
from mtlkit.registry import get_registry



def fusion(name, channels=6, names=("a", "b"), **options):
    # the options pass the config's one check first, as build_model's do
    cls = get_registry().get("fusion", name)
    return cls(channels, list(names), **component_options(cls, options, "model.fusion"))


def maps(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 6, 3, 4, generator=g)
    dec = {"a": torch.randn(2, 6, 3, 4, generator=g), "b": torch.randn(2, 6, 3, 4, generator=g)}
    return x, dec


def test_registered():
    assert {"residual", "concat", "gated", "none"} <= set(get_registry().names("fusion"))


def test_residual_is_sum_then_bn_relu():
    x, dec = maps()
    f = fusion("residual", post_norm=False)
    out = f(x.clone(), iter(dec.items()))
    assert torch.allclose(out, x + dec["a"] + dec["b"])
    f = fusion("residual")
    f.train()
    out = f(x, iter(dec.items()))
    assert torch.allclose(out, torch.relu(f.post.bn(x + dec["a"] + dec["b"])), atol=1e-6)
    # x is not modified in place by the accumulation
    assert torch.equal(x, maps()[0])


def test_residual_eval_inplace_path_matches_module_path():
    x, dec = maps()
    f = fusion("residual")
    with torch.no_grad():
        f.post.bn.running_mean.uniform_(-1, 1)
        f.post.bn.running_var.uniform_(0.5, 2)
        f.post.bn.weight.uniform_(0.5, 2)
        f.post.bn.bias.uniform_(-1, 1)
    f.eval()
    expected = torch.relu(f.post.bn(x + dec["a"] + dec["b"])).detach()
    with torch.no_grad():
        out = f(x, iter(dec.items()))
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(x, maps()[0])


def test_concat_equals_explicit_concatenation():
    x, dec = maps()
    f = fusion("concat", post_norm=False)
    expected = f.proj(torch.cat([x, dec["a"], dec["b"]], dim=1))
    assert torch.allclose(f(x, iter(dec.items())), expected, atol=1e-5)
    f = fusion("concat", post_norm=False, merge="sum")
    assert f.proj.in_channels == 12
    expected = f.proj(torch.cat([x, dec["a"] + dec["b"]], dim=1))
    assert torch.allclose(f(x, iter(dec.items())), expected, atol=1e-5)


def test_gated_channel_and_pixel():
    x, dec = maps()
    f = fusion("gated", post_norm=False)
    assert torch.allclose(f(x, iter(dec.items())), x + 0.5 * (dec["a"] + dec["b"]), atol=1e-6)
    with torch.no_grad():
        f.gates["a"].fill_(-1e4)  # closed gate: a is ignored
    assert torch.allclose(f(x, iter(dec.items())), x + 0.5 * dec["b"], atol=1e-6)
    f = fusion("gated", post_norm=False, gate="pixel", init=2.0)
    s = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(f(x, iter(dec.items())), x + s * (dec["a"] + dec["b"]), atol=1e-5)
    with pytest.raises(ConfigError, match="gate"):
        fusion("gated", gate="spatial")


def test_none_is_identity_and_needs_no_decoder():
    x, _ = maps()
    f = fusion("none", names=())
    assert f(x, iter(())) is x
    assert get_registry().get("fusion", "none").uses_decoded is False
