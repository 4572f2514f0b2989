"""Loss weightings: fixed, uncertainty (both forms), DWA schedule and state."""

import math

import pytest
import torch

from mtlkit.registry import get_registry
from mtlkit.weighting import LossWeighting



class T:
    def __init__(self, weight=1.0, is_regression=False):
        self.weight, self.is_regression = weight, is_regression


TASKS = {"det": T(1.0), "depth": T(0.5, True)}


def make(name, **options):
    w = get_registry().get("weighting", name)(TASKS, **options)
    assert isinstance(w, LossWeighting)
    return w


def losses(a=2.0, b=4.0):
    return {"det": torch.tensor(a, requires_grad=True), "depth": torch.tensor(b, requires_grad=True)}


def test_fixed_uses_task_weights():
    total, weights = make("fixed")(losses())
    assert float(total) == pytest.approx(2.0 + 0.5 * 4.0)
    assert weights == {"det": 1.0, "depth": 0.5}


def test_uncertainty_simplified_and_gradient():
    w = make("uncertainty")
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.5, -1.0]))
    total, weights = w(losses())
    expected = math.exp(-0.5) * 2 + 0.5 + 0.5 * (math.exp(1.0) * 4 - 1.0)
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert weights["det"] == pytest.approx(math.exp(-0.5))
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L
    assert float(w.log_vars.grad[0]) == pytest.approx(1 - math.exp(-0.5) * 2, rel=1e-6)
    assert list(dict(w.named_parameters())) == ["log_vars"]


def test_uncertainty_kendall_factors():
    w = make("uncertainty", form="kendall")
    total, weights = w(losses())
    # s = 0: classification 1*L + 0, regression 0.5*L + 0, times the task weight 0.5
    assert float(total) == pytest.approx(2.0 + 0.5 * 0.5 * 4.0)
    assert weights == {"det": 1.0, "depth": 0.25}
    # s != 0, where the factors of exp(-s) and of s show (at s = 0 a wrong one passes):
    # classification exp(-s) L + s/2, regression (exp(-s) L + s) / 2, the latter times weight 0.5
    s_det, s_depth = 0.7, -0.4
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([s_det, s_depth]))
    total, weights = w(losses())
    det = math.exp(-s_det) * 2.0 + 0.5 * s_det
    depth = 0.5 * (0.5 * math.exp(-s_depth) * 4.0 + 0.5 * s_depth)
    assert float(total) == pytest.approx(det + depth, rel=1e-6)
    assert weights["det"] == pytest.approx(math.exp(-s_det), rel=1e-6)
    assert weights["depth"] == pytest.approx(0.5 * 0.5 * math.exp(-s_depth), rel=1e-6)
    total.backward()
    # d/ds of exp(-s) L + s/2 is 1/2 - exp(-s) L; of the regression term, 0.5 * (1/2 - exp(-s) L / 2)
    assert float(w.log_vars.grad[0]) == pytest.approx(0.5 - math.exp(-s_det) * 2.0, rel=1e-6)
    assert float(w.log_vars.grad[1]) == pytest.approx(0.5 * (0.5 - 0.5 * math.exp(-s_depth) * 4.0), rel=1e-6)


def test_dwa_schedule_hand_computed():
    w = make("dwa", period=2, temperature=2.0)
    w.train()
    seq = [(2.0, 4.0), (2.0, 4.0), (1.0, 4.0), (1.0, 4.0)]
    for a, b in seq:
        _, weights = w(losses(a, b))
        assert weights == {"det": 1.0, "depth": 0.5}  # first two periods: 1 (x task weight)
    _, weights = w(losses(1.0, 4.0))
    r = torch.tensor([0.5, 1.0])
    expected = 2 * torch.softmax(r / 2.0, dim=0)
    assert weights["det"] == pytest.approx(float(expected[0]))
    assert weights["depth"] == pytest.approx(0.5 * float(expected[1]))
    assert float(w.weights.sum()) == pytest.approx(2.0)
    # eval mode does not touch the statistics
    state = {k: v.clone() for k, v in w.state_dict().items()}
    w.eval()
    w(losses(100.0, 100.0))
    assert all(torch.equal(state[k], v) for k, v in w.state_dict().items())


def test_dwa_state_survives_reload_and_epoch_mode():
    w = make("dwa", period=0)
    w.train()
    for epoch, (a, b) in enumerate([(4.0, 1.0), (2.0, 1.0)]):
        w(losses(a, b))
        w.on_epoch_end(epoch)
    assert float(w.weights[0]) < 1.0 < float(w.weights[1])
    w2 = make("dwa", period=0)
    w2.load_state_dict(w.state_dict())
    assert torch.equal(w2.weights, w.weights)
