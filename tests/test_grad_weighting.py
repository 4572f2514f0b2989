"""Gradient-level weightings (mtlkit.gradient_weighting + the built-in methods):
each against the property that defines it, hand-computed steps for the
stateful ones, the conventions every method keeps (absent and non-finite
tasks, the primary gradient, grad_scale, state through a checkpoint, the
Gram-matrix route used under DDP), a two-task problem with a known optimum,
and random gradient matrices (hypothesis)."""

import io
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlkit.config import load_config
from mtlkit.errors import ConfigError
from mtlkit.gradient_weighting import (GradientWeighting, GradientWeightingError, apply_coefficients,
                                       flatten_gradients, gram_matrix, write_gradients)
from mtlkit.registry import get_registry
from mtlkit.weighting import LossWeighting

NAMES = ("gcs", "olaux", "pcgrad_primary", "pcgrad", "cagrad", "mgda", "imtl", "aligned_mtl",
         "gradnorm", "famo", "rlw")
PRIMARY_AWARE = ("gcs", "olaux", "pcgrad_primary")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class T:
    """A task stand-in: what a weighting reads of a task (role, weight)."""

    def __init__(self, role="auxiliary", weight=1.0):
        self.role, self.weight = role, weight


TASKS = {"det": T("primary"), "depth": T(), "normals": T()}


def make(name, tasks=TASKS, **options):
    w = get_registry().get("weighting", name)(tasks, **options)
    assert isinstance(w, GradientWeighting) and isinstance(w, LossWeighting)
    return w.train()


def grads64(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def losses_of(values, names=("det", "depth", "normals")):
    return dict(zip(names, values))


# ---------------------------------------------------------------------------
# registration, options, the loss-level call
# ---------------------------------------------------------------------------

def test_every_method_is_registered_and_listed_by_the_cli():
    registry = get_registry()
    for name in NAMES:
        cls = registry.get("weighting", name)
        assert issubclass(cls, GradientWeighting)
        assert registry.entry("weighting", name).origin.plugin == "gradient_weightings"
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-m", "mtlkit", "plugins", "--json"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = {p["name"] for p in json.loads(result.stdout)["plugins"] if p["kind"] == "weighting"}
    assert set(NAMES) <= listed


def test_options_are_validated_by_the_config_and_by_hand():
    cfg = load_config("configs/synthetic/rock.yaml", ["model.weighting=gcs"])
    assert cfg["model"]["weighting"] == "gcs" or cfg["model"]["weighting"]["name"] == "gcs"
    load_config("configs/synthetic/rock.yaml", ["model.weighting={name: cagrad, c: 0.2, place: parameters}"])
    with pytest.raises(ConfigError, match=r"model.weighting.mode: invalid value 'bogus'"):
        load_config("configs/synthetic/rock.yaml", ["model.weighting={name: gcs, mode: bogus}"])
    with pytest.raises(ConfigError, match=r"unknown key 'model.weighting.plase'.*did you mean 'place'"):
        load_config("configs/synthetic/rock.yaml", ["model.weighting={name: mgda, plase: parameters}"])
    with pytest.raises(ConfigError, match=r"model.weighting.horizon: expected a number >= 1"):
        make("olaux", horizon=0)
    with pytest.raises(ConfigError, match=r"unknown key 'model.weighting.place'"):
        make("famo", place="parameters")  # a loss-level method has no gradient place
    with pytest.raises(ConfigError, match=r"model.weighting.seed: expected an integer or null"):
        make("rlw", seed="abc")
    with pytest.raises(ConfigError, match=r"exactly one task with role 'primary'"):
        make("gcs", tasks={"a": T(), "b": T()})
    make("pcgrad", tasks={"a": T(), "b": T()})  # symmetric methods need no primary


def test_declared_places_and_flags():
    assert make("gcs").place == "representation"
    assert make("gcs", place="parameters").place == "parameters"
    assert make("famo").place is None and make("rlw").place is None
    assert make("mgda").needs_losses is False and make("mgda", normalize="loss").needs_losses is True
    for name in NAMES:
        cls = get_registry().get("weighting", name)
        assert cls.primary_aware == (name in PRIMARY_AWARE)
        assert set(cls.defaults) >= ({"place"} if cls.needs_gradients else set())


def test_forward_refuses_training_and_reports_in_eval():
    w = make("gcs")
    losses = {"det": torch.tensor(2.0), "depth": torch.tensor(4.0)}
    with pytest.raises(GradientWeightingError, match="combines per-task gradients"):
        w(losses)
    w.eval()
    tasks = {"det": T("primary"), "depth": T(weight=0.5)}
    total, weights = make("gcs", tasks=tasks).eval()(losses)
    assert float(total) == pytest.approx(2.0 + 0.5 * 4.0) and weights == {"det": 1.0, "depth": 0.5}


# ---------------------------------------------------------------------------
# the defining property of each method
# ---------------------------------------------------------------------------

def test_mgda_two_tasks_is_the_closed_form_min_norm_point():
    gen = torch.Generator().manual_seed(0)
    tasks = {"a": T(), "b": T()}
    for _ in range(50):
        g = torch.randn(2, 6, generator=gen, dtype=torch.float64)
        g[1] *= float(torch.rand((), generator=gen, dtype=torch.float64)) * 5
        g1, g2 = g
        alpha = float(((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2)))
        alpha = min(1.0, max(0.0, alpha))
        expected = alpha * g1 + (1 - alpha) * g2
        result = make("mgda", tasks=tasks).combine(g)
        assert torch.allclose(result.update, expected, atol=1e-10)
        assert result.coefficients.sum().item() == pytest.approx(1.0)


def test_mgda_many_tasks_satisfies_the_min_norm_optimality_conditions():
    gen = torch.Generator().manual_seed(1)
    tasks = {f"t{i}": T() for i in range(5)}
    for d in (2, 3, 8):  # d < k: the hull may contain 0
        for _ in range(10):
            g = torch.randn(5, d, generator=gen, dtype=torch.float64)
            r = make("mgda", tasks=tasks).combine(g)
            alpha, u = r.coefficients, r.update
            assert (alpha >= 0).all() and alpha.sum().item() == pytest.approx(1.0)
            # KKT: <g_t, u> >= ||u||^2 for every t, equality where alpha_t > 0
            dots = g @ u
            norm2 = float(u @ u)
            assert (dots >= norm2 - 1e-9).all()
            assert torch.allclose(dots[alpha > 1e-9], torch.full_like(dots[alpha > 1e-9], norm2),
                                  atol=1e-8)


def test_mgda_normalisations():
    g = grads64([3.0, 0.0], [0.0, 1.0])
    tasks = {"a": T(), "b": T()}
    # l2: the unit gradients e1, e2 -> alpha = (1/2, 1/2) on them -> coefficients 1/2 / norms
    r = make("mgda", tasks=tasks, normalize="l2").combine(g)
    assert r.coefficients.tolist() == pytest.approx([1 / 6, 1 / 2])
    r = make("mgda", tasks=tasks, normalize="loss").combine(g, losses={"a": 3.0, "b": 1.0})
    assert r.coefficients.tolist() == pytest.approx([1 / 6, 1 / 2])  # g/L = e1, e2 again
    with pytest.raises(ValueError, match="reads the task losses"):
        make("mgda", tasks=tasks, normalize="loss+").combine(g)


def test_pcgrad_projects_two_conflicting_gradients():
    g1, g2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([-1.0, 2.0], dtype=torch.float64)
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    tasks = {"a": T(), "b": T()}
    r = make("pcgrad", tasks=tasks).combine(torch.stack([g1, g2]))
    assert torch.allclose(r.update, p1 + p2, atol=1e-12)
    assert float(p1 @ g2) == pytest.approx(0.0, abs=1e-12) and float(p2 @ g1) == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(r.directions @ torch.stack([g1, g2]), torch.stack([p1, p2]), atol=1e-12)
    mean = make("pcgrad", tasks=tasks, reduction="mean").combine(torch.stack([g1, g2]))
    assert torch.allclose(mean.update, (p1 + p2) / 2, atol=1e-12)
    # agreeing gradients are left alone
    r = make("pcgrad", tasks=tasks).combine(grads64([1.0, 0.0], [1.0, 1.0]))
    assert r.update.tolist() == [2.0, 1.0]


def test_pcgrad_projects_on_the_original_gradients_in_a_seeded_random_order():
    g = grads64([1.0, 0.0], [-0.8, 1.0], [-0.6, -1.0])
    orders = set()
    for seed in range(8):
        r1 = make("pcgrad", seed=seed).combine(g)
        r2 = make("pcgrad", seed=seed).combine(g)
        assert torch.equal(r1.update, r2.update)
        orders.add(tuple(round(x, 9) for x in r1.update.tolist()))
    assert len(orders) > 1  # with three tasks the order matters, and it is drawn
    # task order (no shuffle): hand-computed for task 0: project on g1, then on g2 (original)
    r = make("pcgrad", shuffle=False).combine(g)
    g0 = g[0].clone()
    for j in (1, 2):
        if g0 @ g[j] < 0:
            g0 = g0 - (g0 @ g[j]) / (g[j] @ g[j]) * g[j]
    assert torch.allclose(r.directions[0] @ g, g0, atol=1e-12)


def test_gcs_zeroes_a_negative_cosine_auxiliary_and_scales_in_the_weighted_mode():
    g = grads64([1.0, 0.0], [-1.0, 1.0], [1.0, 1.0])  # depth opposes det, normals agrees
    r = make("gcs").combine(g)
    assert r.coefficients.tolist() == [1.0, 0.0, 1.0]
    assert r.update.tolist() == [2.0, 1.0]
    assert r.info["cos/depth"] == pytest.approx(-1 / math.sqrt(2))
    r = make("gcs", mode="scale").combine(g)
    assert r.coefficients.tolist() == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)])
    # the task weight is the auxiliary lambda of the paper
    tasks = {"det": T("primary"), "depth": T(weight=0.5), "normals": T(weight=0.25)}
    r = make("gcs", tasks=tasks).combine(g)
    assert r.coefficients.tolist() == [1.0, 0.0, 0.25]
    assert r.head_weights == {"det": 1.0, "depth": 0.5, "normals": 0.25}


def test_cagrad_with_c_zero_is_the_mean_gradient():
    g = torch.randn(3, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = make("cagrad", c=0.0).combine(g)
    assert torch.allclose(r.update, g.mean(0), atol=1e-12)


def test_cagrad_maximises_the_worst_task_improvement_in_its_ball():
    gen = torch.Generator().manual_seed(3)
    for c in (0.2, 0.5, 0.9):
        g = torch.randn(3, 5, generator=gen, dtype=torch.float64)
        g0 = g.mean(0)
        d = make("cagrad", c=c).combine(g).update
        radius = c * float(g0.norm())
        assert float((d - g0).norm()) == pytest.approx(radius, rel=1e-5)
        worst = float((g @ d).min())
        # no point of the ball does better (random points on its surface)
        for _ in range(300):
            u = torch.randn(5, generator=gen, dtype=torch.float64)
            other = g0 + radius * u / u.norm()
            assert float((g @ other).min()) <= worst + 1e-7
        rescaled = make("cagrad", c=c, rescale=True).combine(g).update
        assert torch.allclose(rescaled, d / (1 + c * c), atol=1e-9)


def test_imtl_gives_equal_projections_on_every_unit_gradient():
    gen = torch.Generator().manual_seed(4)
    for k in (2, 3, 4):
        tasks = {f"t{i}": T() for i in range(k)}
        for _ in range(10):
            g = torch.randn(k, 6, generator=gen, dtype=torch.float64) * torch.rand(k, 1, generator=gen,
                                                                                  dtype=torch.float64) * 4
            r = make("imtl", tasks=tasks).combine(g)
            proj = (g / g.norm(dim=1, keepdim=True)) @ r.update
            assert torch.allclose(proj, proj[0].expand_as(proj), rtol=1e-8, atol=1e-10)
            assert r.coefficients.sum().item() == pytest.approx(1.0)
    # a zero gradient has no direction: the others are balanced without it
    r = make("imtl").combine(grads64([2.0, 0.0], [0.0, 0.0], [0.0, 1.0]))
    assert r.coefficients[1] == 0.0
    assert r.update[0] / 1.0 == pytest.approx(float(r.update[1]))  # equal projections on e1, e2


def test_aligned_mtl_gradients_are_orthogonal_with_equal_norms():
    gen = torch.Generator().manual_seed(5)
    tasks = {"a": T(), "b": T(weight=2.0), "c": T()}
    for _ in range(10):
        g = torch.randn(3, 6, generator=gen, dtype=torch.float64)
        w = make("aligned_mtl", tasks=tasks)
        r = w.combine(g)
        b, sigma = w.basis(g @ g.T)
        aligned = b.T @ g                      # rows: the aligned task gradients
        gram = aligned @ aligned.T
        sigma_min = float(torch.linalg.svdvals(g).min())
        assert sigma == pytest.approx(sigma_min)
        assert torch.allclose(gram, sigma_min ** 2 * torch.eye(3, dtype=torch.float64), atol=1e-9)
        assert torch.allclose(r.update, aligned[0] + 2.0 * aligned[1] + aligned[2], atol=1e-9)
    # rank-deficient: collinear gradients keep the span, no division by zero
    r = make("aligned_mtl", tasks=tasks).combine(grads64([1.0, 0.0], [2.0, 0.0], [0.0, 1.0]))
    assert torch.isfinite(r.update).all() and r.update.abs().sum() > 0


def test_primary_pcgrad_projects_only_conflicting_auxiliary_gradients():
    g = grads64([1.0, 0.0], [-1.0, 1.0], [1.0, 1.0])
    r = make("pcgrad_primary").combine(g)
    rows = r.directions @ g
    assert rows[0].tolist() == [1.0, 0.0]          # the primary as it was
    assert rows[1].tolist() == pytest.approx([0.0, 1.0])  # projected off the primary
    assert rows[2].tolist() == [1.0, 1.0]          # agreeing: untouched
    assert r.update.tolist() == pytest.approx([2.0, 2.0])


def test_primary_gradvac_sets_the_target_cosine_and_tracks_it():
    g = grads64([1.0, 0.0], [0.2, math.sqrt(1 - 0.04)])  # cos = 0.2
    tasks = {"det": T("primary"), "depth": T()}
    w = make("pcgrad_primary", tasks=tasks, mode="gradvac", ema=0.1)
    first = w.combine(g)                       # target 0: cos 0.2 >= 0, untouched
    assert torch.allclose(first.update, g.sum(0))
    assert float(w.targets[1]) == pytest.approx(0.1 * 0.2)
    w.targets[1] = 0.5
    r = w.combine(g)
    adjusted = (r.directions @ g)[1]
    cos = float(adjusted @ g[0] / (adjusted.norm() * g[0].norm()))
    assert cos == pytest.approx(0.5, abs=1e-12)
    assert float(w.targets[1]) == pytest.approx(0.9 * 0.5 + 0.1 * 0.2)
    # with target 0 it is the projection
    conflicting = grads64([1.0, 0.0], [-1.0, 1.0])
    a = make("pcgrad_primary", tasks=tasks, mode="gradvac").combine(conflicting)
    b = make("pcgrad_primary", tasks=tasks).combine(conflicting)
    assert torch.allclose(a.update, b.update, atol=1e-12)


def test_olaux_hand_computed_steps():
    tasks = {"det": T("primary"), "depth": T(weight=0.5)}
    w = make("olaux", tasks=tasks, lr=0.5, horizon=2)
    r1 = w.combine(grads64([1.0, 0.0], [-1.0, 1.0]))
    assert r1.update.tolist() == [0.5, 0.5]           # det + 1 * 0.5 * depth
    r2 = w.combine(grads64([1.0, 1.0], [-0.5, 0.0]))
    assert r2.coefficients.tolist() == [1.0, 0.5]     # lambda moves only every 2 steps
    # lambda = 1 + 0.5 * (<det, 0.5 depth>_1 + <det, 0.5 depth>_2) = 1 + 0.5 * (-0.5 - 0.25)
    assert float(w.aux_weights[1]) == pytest.approx(0.625)
    r3 = w.combine(grads64([1.0, 0.0], [3.0, 0.0]))
    assert r3.coefficients.tolist() == pytest.approx([1.0, 0.625 * 0.5])
    assert r3.head_weights == pytest.approx({"det": 1.0, "depth": 0.3125})  # the loss is weighted
    # a strongly conflicting auxiliary task is switched off, not ascended
    w = make("olaux", tasks=tasks, lr=10.0, horizon=1)
    w.combine(grads64([1.0, 0.0], [-1.0, 0.0]))
    assert float(w.aux_weights[1]) == 0.0
    w = make("olaux", tasks=tasks, lr=10.0, horizon=1, nonnegative=False)
    w.combine(grads64([1.0, 0.0], [-1.0, 0.0]))
    assert float(w.aux_weights[1]) == pytest.approx(1 - 10 * 0.5)


def test_famo_hand_computed_steps():
    tasks = {"a": T(), "b": T()}
    w = make("famo", tasks=tasks, lr=0.5, decay=0.1)
    g = grads64([1.0, 0.0], [0.0, 1.0])
    r1 = w.combine(g, losses={"a": 2.0, "b": 4.0})
    # z = (1/2, 1/2): c proportional to z / l = (1/4, 1/8)
    assert r1.coefficients.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert r1.head_weights == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    r2 = w.combine(g, losses={"a": 1.0, "b": 3.0})
    d = [math.log(2.0) - math.log(1.0), math.log(4.0) - math.log(3.0)]
    zd = 0.5 * d[0] + 0.5 * d[1]
    xi = [-0.5 * (0.5 * (d[0] - zd) + 0.1 * 0.0), -0.5 * (0.5 * (d[1] - zd) + 0.1 * 0.0)]
    z = [math.exp(x) / (math.exp(xi[0]) + math.exp(xi[1])) for x in xi]
    raw = [z[0] / 1.0, z[1] / 3.0]
    assert w.logits.tolist() == pytest.approx(xi, abs=1e-12)
    assert r2.coefficients.tolist() == pytest.approx([raw[0] / sum(raw), raw[1] / sum(raw)], abs=1e-12)
    # task a improved more: its weight went down
    assert z[0] < 0.5
    # a third step with the same losses: delta = 0, only the decay acts on the logits
    w.combine(g, losses={"a": 1.0, "b": 3.0})
    assert w.logits.tolist() == pytest.approx([x - 0.5 * 0.1 * x for x in xi], abs=1e-12)


def test_famo_needs_no_gradient():
    w = make("famo", tasks={"a": T(), "b": T()})
    r = w.plan(losses={"a": 1.0, "b": 1.0})
    assert r.coefficients.tolist() == pytest.approx([0.5, 0.5])
    assert w.needs_gradients is False and w.place is None


def test_gradnorm_hand_computed_steps():
    tasks = {"a": T(), "b": T()}
    w = make("gradnorm", tasks=tasks, alpha=1.0, lr=0.1)
    g = grads64([3.0, 0.0], [0.0, 1.0])            # norms 3 and 1
    r1 = w.combine(g, losses={"a": 2.0, "b": 4.0})
    assert r1.coefficients.tolist() == [1.0, 1.0]
    # G = (3, 1), mean 2, ratios 1 -> target (2, 2); signs (+, -): w = (1 - 0.3, 1 + 0.1) * 2 / 1.8
    w1 = [0.7 * 2 / 1.8, 1.1 * 2 / 1.8]
    assert w.loss_weights.tolist() == pytest.approx(w1)
    r2 = w.combine(g, losses={"a": 1.0, "b": 4.0})
    assert r2.coefficients.tolist() == pytest.approx(w1)
    ratios = [0.5 / 0.75, 1.0 / 0.75]
    gn = [w1[0] * 3, w1[1] * 1]
    target = [(gn[0] + gn[1]) / 2 * r for r in ratios]
    signs = [math.copysign(1, gn[i] - target[i]) for i in range(2)]
    new = [w1[0] - 0.1 * signs[0] * 3, w1[1] - 0.1 * signs[1] * 1]
    new = [x * sum(w1) / sum(new) for x in new]
    assert w.loss_weights.tolist() == pytest.approx(new)
    assert r2.head_weights == pytest.approx({"a": w1[0], "b": w1[1]})


def test_rlw_draws_reproducible_weights_from_its_checkpointed_generator():
    w = make("rlw", seed=3)
    draws = [w.plan().coefficients for _ in range(3)]
    for c in draws:
        assert (c > 0).all() and c.sum().item() == pytest.approx(1.0)
    assert not torch.equal(draws[0], draws[1])
    again = make("rlw", seed=3)
    assert torch.equal(again.plan().coefficients, draws[0])
    # the state travels in the state dict: a restored copy continues the stream
    restored = make("rlw", seed=99)
    restored.load_state_dict(again.state_dict())
    assert torch.equal(restored.plan().coefficients, draws[1])
    # eval mode and update_state=False draw without advancing
    again.eval()
    assert torch.equal(again.plan().coefficients, draws[1])
    again.train()
    assert torch.equal(again.plan(update_state=False).coefficients, draws[1])
    assert torch.equal(again.plan().coefficients, draws[1])
    for kind in ("uniform", "dirichlet"):
        c = make("rlw", distribution=kind, total=3.0).plan().coefficients
        assert (c > 0).all() and c.sum().item() == pytest.approx(3.0)


def test_seed_defaults_to_the_torch_seed_at_build_time():
    torch.manual_seed(1234)
    a = make("rlw").plan().coefficients
    torch.manual_seed(1234)
    b = make("rlw").plan().coefficients
    torch.manual_seed(4321)
    c = make("rlw").plan().coefficients
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------
# conventions every method keeps
# ---------------------------------------------------------------------------

def _grads_and_losses(seed=6, k=3, d=5):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(k, d, generator=gen, dtype=torch.float64)
    losses = (torch.rand(k, generator=gen, dtype=torch.float64) + 0.5).tolist()
    return g, losses


@pytest.mark.parametrize("name", PRIMARY_AWARE)
def test_primary_gradient_is_never_changed_by_primary_aware_methods(name):
    gen = torch.Generator().manual_seed(7)
    tasks = {"det": T("primary", weight=2.0), "depth": T(weight=0.5), "normals": T()}
    variants = [make(name, tasks=tasks)]
    if name == "pcgrad_primary":
        variants.append(make(name, tasks=tasks, mode="gradvac", ema=0.5))
    for w in variants:
        for _ in range(20):
            g = torch.randn(3, 4, generator=gen, dtype=torch.float64)
            r = w.combine(g, losses=losses_of([1.0, 1.0, 1.0]))
            assert r.directions[0].tolist() == [2.0, 0.0, 0.0]
            if name in ("gcs", "pcgrad_primary") and w.options["mode"] in ("gate", "scale", "project"):
                # no auxiliary part opposes the primary (OL-AUX keeps a conflicting
                # lambda > 0 until it adapts; GradVac's targets may turn negative)
                assert float(r.update @ g[0]) >= 2.0 * float(g[0] @ g[0]) - 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_absent_tasks_take_no_part(name):
    g, losses = _grads_and_losses()
    full = make(name, seed=0) if get_registry().get("weighting", name).randomised else make(name)
    g_nan = g.clone()
    g_nan[2] = float("nan")                        # an absent row is never read
    r = full.combine(g_nan, losses_of(losses), present={"det": True, "depth": True, "normals": False})
    assert r.absent == ("normals",) and r.coefficients[2] == 0.0 and "normals" not in r.head_weights
    assert torch.isfinite(r.update).all()
    two = {"det": TASKS["det"], "depth": TASKS["depth"]}
    small = make(name, tasks=two, seed=0) if full.randomised else make(name, tasks=two)
    ref = small.combine(g[:2], losses_of(losses[:2]))
    assert torch.allclose(r.update, ref.update, atol=1e-12)
    # dict input: a missing name is an absent task
    d = make(name, seed=0) if full.randomised else make(name)
    r2 = d.combine({"det": g[0], "depth": g[1]}, losses_of(losses))
    assert torch.allclose(r2.update, ref.update, atol=1e-12)
    # nothing present: a zero update, no task active
    none = make(name).combine(g, losses_of(losses), present=[])
    assert none.active == () and torch.equal(none.update, torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_gradients_are_dropped_never_propagated(name):
    g, losses = _grads_and_losses()
    randomised = get_registry().get("weighting", name).randomised
    fresh = (lambda **kw: make(name, seed=0, **kw)) if randomised else (lambda **kw: make(name, **kw))
    bad = g.clone()
    bad[1, 2] = float("inf")
    ref = fresh().combine(g, losses_of(losses), present=["det", "normals"])
    w = fresh()
    r = w.combine(bad, losses_of(losses))
    assert r.nonfinite == ("depth",) and "depth" not in r.active and r.coefficients[1] == 0.0
    assert torch.isfinite(r.update).all()
    assert torch.allclose(r.update, ref.update, atol=1e-12)
    if w.needs_losses:  # a non-finite loss drops its task too
        bad_losses = list(losses)
        bad_losses[1] = float("nan")
        r = fresh().combine(g, losses_of(bad_losses))
        assert r.nonfinite == ("depth",) and torch.allclose(r.update, ref.update, atol=1e-12)
    # with a gradient scaler a non-finite gradient is an overflow: skip, keep the state
    w = fresh()
    before = {k: v.clone() for k, v in w.state_dict().items()}
    r = w.combine(bad * 1024.0, losses_of(losses), grad_scale=1024.0)
    assert r.skip_step and r.active == () and not r.update.abs().sum()
    assert all(torch.equal(before[k], v) for k, v in w.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
def test_grad_scale_is_removed_before_the_method_runs(name):
    g, losses = _grads_and_losses(seed=8)
    randomised = get_registry().get("weighting", name).randomised
    a = make(name, seed=0) if randomised else make(name)
    b = make(name, seed=0) if randomised else make(name)
    for step in range(3):  # state (OL-AUX, GradNorm, GradVac, FAMO) must move alike
        ra = a.combine(g * (step + 1), losses_of(losses))
        rb = b.combine(g * (step + 1) * 512.0, losses_of(losses), grad_scale=512.0)
        assert torch.allclose(ra.coefficients, rb.coefficients, rtol=1e-10, atol=1e-12)
        assert torch.allclose(rb.update, 512.0 * ra.update, rtol=1e-10, atol=1e-9)
    for key, value in a.state_dict().items():
        assert torch.allclose(value.double(), b.state_dict()[key].double(), rtol=1e-10, atol=1e-12), key


@pytest.mark.parametrize("name", NAMES)
def test_reduced_gram_route_equals_combining_the_whole_batch(name):
    """The distributed representation route: each process holds the
    gradients of its own samples (a slice of the representation); the sum of
    the processes' Gram matrices is the Gram matrix of the whole batch, so the
    coefficients (and every state update) are those of one process holding
    it all, and each process applies them to its slice."""
    gen = torch.Generator().manual_seed(9)
    g = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    losses = losses_of([0.7, 1.3, 2.0])
    randomised = get_registry().get("weighting", name).randomised
    whole = make(name, seed=0) if randomised else make(name)
    ranks = make(name, seed=0) if randomised else make(name)
    for _ in range(3):
        ref = whole.combine(g, losses)
        parts = [g[:, :5], g[:, 5:]]
        gram = sum(gram_matrix(list(p)) for p in parts)
        plan = ranks.plan(gram=gram, losses=losses)
        update = torch.cat([plan.apply(p) for p in parts])
        assert torch.allclose(update, ref.update, atol=1e-12)
        g = g + 0.1 * torch.randn(3, 12, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_a_checkpoint_round_trip(name):
    gen = torch.Generator().manual_seed(10)
    steps = [(torch.randn(3, 4, generator=gen, dtype=torch.float64),
              losses_of((torch.rand(3, generator=gen, dtype=torch.float64) + 0.5).tolist()))
             for _ in range(6)]
    randomised = get_registry().get("weighting", name).randomised
    opts = {"seed": 5} if randomised else {}
    if name == "olaux":
        opts = {"horizon": 2, "lr": 0.3}
    if name == "pcgrad_primary":
        opts = {"mode": "gradvac", "ema": 0.3}
    straight = make(name, **opts)
    ref = [straight.combine(g, l).update for g, l in steps]
    first = make(name, **opts)
    for g, l in steps[:3]:
        first.combine(g, l)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make(name, **({**opts, "seed": 77} if randomised else opts))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for (g, l), expected in zip(steps[3:], ref[3:]):
        assert torch.allclose(resumed.combine(g, l).update, expected, atol=1e-12)


def test_zero_task_weight_switches_a_task_off_for_every_method():
    tasks = {"det": T("primary"), "depth": T(weight=0.0), "normals": T()}
    g, losses = _grads_and_losses(seed=11)
    for name in NAMES:
        r = make(name, tasks=tasks).combine(g, losses_of(losses))
        assert r.coefficients[1] == 0.0 and "depth" not in r.active, name


def test_head_loss_weighs_active_tasks_and_leaves_non_finite_ones_out():
    x = torch.ones(2, requires_grad=True)
    losses = {"det": (x * 2).sum(), "depth": (x * float("nan")).sum(), "normals": (x * 3).sum()}
    w = make("gcs", tasks={"det": T("primary"), "depth": T(), "normals": T(weight=0.5)})
    g = grads64([1.0, 0.0], [float("nan"), 0.0], [-1.0, 0.0])
    r = w.combine(g)
    assert r.nonfinite == ("depth",)
    total = w.head_loss(losses, r)
    total.backward()
    assert x.grad.tolist() == [2.0 + 0.5 * 3.0] * 2  # configured weights for the heads
    empty = w.combine(g, present=[])
    assert float(w.head_loss(losses, empty)) == 0.0 and not w.head_loss(losses, empty).requires_grad


def test_bad_calls_are_reported():
    w = make("gcs")
    with pytest.raises(ValueError, match="3 gradient rows for 2 tasks"):
        make("gcs", tasks={"det": T("primary"), "depth": T()}).combine(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="unknown tasks"):
        w.combine({"det": torch.zeros(2), "sky": torch.zeros(2)})
    with pytest.raises(ValueError, match="no gradient given for the present tasks"):
        w.combine({"det": torch.zeros(2)}, present=["det", "depth"])
    with pytest.raises(ValueError, match="give grads or gram"):
        w.plan()
    with pytest.raises(ValueError, match="no loss given for the present tasks"):
        make("gradnorm").combine(torch.zeros(3, 2), losses={"det": 1.0})
    with pytest.raises(ValueError, match="grad_scale"):
        w.combine(torch.zeros(3, 2), grad_scale=0.0)


# ---------------------------------------------------------------------------
# helpers for the trainer
# ---------------------------------------------------------------------------

def test_gram_matrix_is_exact_in_float64_by_chunks_and_flags_non_finite_rows():
    gen = torch.Generator().manual_seed(12)
    g = torch.randn(3, 1000, generator=gen)
    ref = g.double() @ g.double().T
    assert torch.allclose(gram_matrix(list(g), chunk=64), ref, rtol=1e-12)
    big = torch.full((2, 4096), 60000.0, dtype=torch.float16)  # squares overflow fp16 and fp32 sums would not
    assert float(gram_matrix(list(big))[0, 0]) == pytest.approx(4096 * 60000.0 ** 2)
    g[1, 7] = float("nan")
    diag = torch.diagonal(gram_matrix(list(g)))
    assert torch.isfinite(diag).tolist() == [True, False, True]


def test_flatten_write_and_apply_round_trip():
    params = [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    flat = flatten_gradients([torch.ones(2, 3), None], params)
    assert flat.tolist() == [1.0] * 6 + [0.0] * 4
    write_gradients(torch.arange(10.0), params)
    assert params[0].grad.tolist() == [[0, 1, 2], [3, 4, 5]] and params[1].grad.tolist() == [6, 7, 8, 9]
    write_gradients(torch.ones(10), params, accumulate=True)
    assert params[1].grad.tolist() == [7, 8, 9, 10]
    with pytest.raises(ValueError, match="update has 9 elements"):
        write_gradients(torch.ones(9), params)
    rows = [torch.ones(3, dtype=torch.bfloat16), torch.full((3,), float("nan"), dtype=torch.bfloat16)]
    out = apply_coefficients(torch.tensor([2.0, 0.0], dtype=torch.float64), rows)
    assert out.dtype == torch.bfloat16 and out.tolist() == [2.0, 2.0, 2.0]  # 0 * NaN never computed


# ---------------------------------------------------------------------------
# a two-task problem with a known optimum
# ---------------------------------------------------------------------------

A = torch.tensor([0.0, 0.0], dtype=torch.float64)  # the primary's optimum
B = torch.tensor([2.0, 1.0], dtype=torch.float64)  # the auxiliary's optimum


def _descend(name, step, steps, **options):
    """Gradient descent on L_main = |x - A|^2 / 2 + 0.1, L_aux = |x - B|^2 / 2
    + 0.1 (shared parameters x; the Pareto set is the segment [A, B])."""
    tasks = {"main": T("primary"), "aux": T()}
    cls = get_registry().get("weighting", name)
    if cls.needs_gradients:
        options.setdefault("place", "parameters")
    w = make(name, tasks=tasks, **options)
    x = torch.tensor([-1.0, 3.0], dtype=torch.float64)
    primary_losses = []
    for _ in range(steps):
        losses = {"main": 0.5 * float((x - A) @ (x - A)) + 0.1, "aux": 0.5 * float((x - B) @ (x - B)) + 0.1}
        primary_losses.append(losses["main"])
        x = x - step * w.combine(torch.stack([x - A, x - B]), losses).update
    return x, primary_losses, w


def _distance_to_pareto_set(x):
    d = B - A
    t = min(1.0, max(0.0, float((x - A) @ d / (d @ d))))
    return float((x - (A + t * d)).norm())


@pytest.mark.parametrize("name", ["pcgrad", "mgda", "imtl", "aligned_mtl", "gradnorm", "famo", "rlw"])
def test_symmetric_methods_reach_a_pareto_stationary_point(name):
    x, _, _ = _descend(name, step=0.1, steps=600)
    assert _distance_to_pareto_set(x) < 1e-3
    # Pareto-stationary: a convex combination of the two gradients vanishes
    g = torch.stack([x - A, x - B])
    alpha = make("mgda", tasks={"a": T(), "b": T()}).combine(g).update
    assert float(alpha.norm()) < 1e-3


def test_cagrad_below_c_one_reaches_the_optimum_of_the_average_loss():
    x, _, _ = _descend("cagrad", step=0.1, steps=300, c=0.5)
    assert torch.allclose(x, (A + B) / 2, atol=1e-6)


@pytest.mark.parametrize("name,options", [("gcs", {}), ("gcs", {"mode": "scale"}),
                                          ("pcgrad_primary", {}), ("olaux", {"lr": 0.5, "horizon": 1})])
def test_primary_aware_methods_reach_the_primary_optimum(name, options):
    x, primary_losses, w = _descend(name, step=0.05, steps=800, **options)
    assert float((x - A).norm()) < 1e-4
    if name != "olaux":  # GCS and primary-PCGrad never move against the primary
        assert all(b <= a + 1e-12 for a, b in zip(primary_losses, primary_losses[1:]))
    else:
        assert float(w.aux_weights[1]) == 0.0  # the conflicting auxiliary task was switched off
    fixed_end = 0.5 * float(((A + B) / 2 - A) @ ((A + B) / 2 - A)) + 0.1
    assert primary_losses[-1] < fixed_end


# ---------------------------------------------------------------------------
# random gradient matrices
# ---------------------------------------------------------------------------

@st.composite
def problems(draw):
    k = draw(st.integers(2, 5))
    d = draw(st.integers(1, 6))
    values = draw(st.lists(st.floats(-10, 10, allow_nan=False, allow_subnormal=False),
                           min_size=k * d, max_size=k * d))
    g = torch.tensor(values, dtype=torch.float64).reshape(k, d)
    zero_rows = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    g[torch.tensor(zero_rows)] = 0.0
    present = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    losses = draw(st.lists(st.floats(0.01, 10), min_size=k, max_size=k))
    weights = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=k, max_size=k))
    name = draw(st.sampled_from(NAMES))
    return name, g, present, losses, weights


@SETTINGS
@given(problems())
def test_invariants_on_random_gradients(problem):
    name, g, present, losses, weights = problem
    k = g.shape[0]
    tasks = {f"t{i}": T("primary" if i == 0 else "auxiliary", weights[i]) for i in range(k)}
    names = list(tasks)
    w = make(name, tasks=tasks)
    r = w.combine(g, dict(zip(names, losses)), present=[n for n, p in zip(names, present) if p])
    assert torch.isfinite(r.update).all() and torch.isfinite(r.coefficients).all()
    for i, p in enumerate(present):
        if not p:
            assert r.coefficients[i] == 0.0 and (r.directions[i] == 0).all()
    active = [i for i, p in enumerate(present) if p]
    u = r.update
    scale = 1e-9 * (1.0 + float(g.abs().max()) ** 2) * 100
    if name in PRIMARY_AWARE and present[0]:
        expected = torch.zeros(k, dtype=torch.float64)
        expected[0] = weights[0]
        assert torch.equal(r.directions[0], expected)
        if name in ("gcs", "pcgrad_primary"):
            # no auxiliary part opposes the primary
            assert float(u @ g[0]) >= weights[0] * float(g[0] @ g[0]) - scale
    if name == "mgda" and active:
        # the min-norm point is a common descent direction: <g_t, u> >= ||u||^2
        assert all(float(g[i] @ u) >= float(u @ u) - scale for i in active)
    if name == "cagrad" and active:
        g0 = (g[active] * torch.tensor([weights[i] for i in active], dtype=torch.float64)[:, None]).mean(0)
        assert float((u - g0).norm()) <= 0.4 * float(g0.norm()) + 1e-6 * (1 + float(g0.norm()))
    if name in ("famo", "rlw") and active:
        assert r.coefficients.sum().item() == pytest.approx(1.0) and (r.coefficients >= 0).all()


@pytest.mark.parametrize("name", ["mgda", "gcs", "pcgrad"])
def test_representation_recipe_on_a_small_network(name):
    """The representation place as docs/weighting.md §4 prescribes it, on a
    trunk + three heads: per-task gradients at the detached representation,
    one backward of [head_loss, R] with [1, update]. The trunk then holds
    sum_s coefficients[s] dL_s/dtrunk and each head head_weight_t dL_t/dhead."""
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh())
    heads = torch.nn.ModuleDict({n: torch.nn.Linear(8, 1) for n in TASKS})
    x, y = torch.randn(6, 5), torch.randn(6, 3)

    def losses_at(rep):
        return {n: ((heads[n](rep).squeeze(1) - y[:, i]) ** 2).mean() for i, n in enumerate(TASKS)}

    w = make(name, seed=0) if name == "pcgrad" else make(name)
    rep = trunk(x)
    detached = rep.detach().requires_grad_()
    losses = losses_at(detached)
    rows = {n: torch.autograd.grad(losses[n], detached, retain_graph=True)[0].flatten() for n in TASKS}
    r = w.combine(rows)
    torch.autograd.backward([w.head_loss(losses, r), rep], [None, r.update.view_as(rep)])
    got_trunk = [p.grad.clone() for p in trunk.parameters()]
    got_heads = {n: heads[n].weight.grad.clone() for n in TASKS}

    # reference: the same coefficients as loss weights through the attached graph
    for p in list(trunk.parameters()) + list(heads.parameters()):
        p.grad = None
    ref_losses = losses_at(trunk(x))
    coefficient_loss = sum(float(r.coefficients[i]) * ref_losses[n] for i, n in enumerate(TASKS))
    expected_trunk = torch.autograd.grad(coefficient_loss, list(trunk.parameters()), retain_graph=True)
    for got, exp in zip(got_trunk, expected_trunk):
        assert torch.allclose(got, exp, atol=1e-6)
    for n in TASKS:
        exp = torch.autograd.grad(ref_losses[n], heads[n].weight, retain_graph=True)[0] * r.head_weights[n]
        assert torch.allclose(got_heads[n], exp, atol=1e-6)
