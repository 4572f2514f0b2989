"""Randomised and adversarial inputs for mtlkit.ops (hypothesis): coordinates on a
coarse grid so that equal scores, duplicate boxes and IoUs exactly at the
threshold are frequent; the oracle is brute force in Python floats."""

from __future__ import annotations


import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mtlkit.ops as ops

import _ops_oracle as oracle

NATIVE = ops.backend() == "native"
BACKENDS = ["torch"] + (["native"] if NATIVE else [])
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

coord = st.integers(0, 8).map(float)
box = st.tuples(coord, coord, coord, coord).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])
score = st.sampled_from([0.1, 0.2, 0.5, 0.9, 1.0])
thresholds = st.sampled_from([0.0, 0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.75, 0.9999])


@st.composite
def box_sets(draw, max_size=40):
    n = draw(st.integers(0, max_size))
    boxes = draw(st.lists(box, min_size=n, max_size=n))
    scores = draw(st.lists(score, min_size=n, max_size=n))
    return boxes, scores


@pytest.mark.parametrize("be", BACKENDS)
@SETTINGS
@given(data=box_sets(), thr=thresholds)
def test_nms_random(be, data, thr):
    boxes, scores = data
    b = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    s = torch.tensor(scores, dtype=torch.float64)
    assert ops.nms(b, s, thr, backend=be).tolist() == oracle.nms(boxes, scores, thr)


@pytest.mark.parametrize("be", BACKENDS)
@SETTINGS
@given(data=box_sets(), thr=thresholds, groups=st.lists(st.integers(0, 3), min_size=40, max_size=40))
def test_batched_nms_random(be, data, thr, groups):
    boxes, scores = data
    idxs = groups[: len(boxes)]
    b = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    got = ops.batched_nms(b, torch.tensor(scores, dtype=torch.float64), torch.tensor(idxs, dtype=torch.long), thr,
                          backend=be)
    assert got.tolist() == oracle.batched_nms(boxes, scores, idxs, thr)


@pytest.mark.skipif(not NATIVE, reason="native extension not active")
@SETTINGS
@given(data=box_sets(300), thr=thresholds, scale=st.sampled_from([0.1, 1.0, 37.0]))
def test_nms_native_equals_reference_float32(data, thr, scale):
    boxes, scores = data
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale
    s = torch.tensor(scores, dtype=torch.float32)
    assert torch.equal(ops.nms(b, s, thr, backend="native"), ops.nms(b, s, thr, backend="torch"))


unit = st.integers(0, 10).map(lambda v: v / 10)
gt_box = st.tuples(unit, unit, unit, unit).map(
    lambda t: [min(t[0], t[2]), min(t[1], t[3]), max(t[0], t[2]), max(t[1], t[3])]
)
PRIORS = [[(j + 0.5) / 4, (i + 0.5) / 4, s, s] for i in range(4) for j in range(4) for s in (0.25, 0.5)]


@pytest.mark.parametrize("be", BACKENDS)
@SETTINGS
@given(
    images=st.lists(st.lists(st.tuples(gt_box, st.integers(1, 5)), max_size=6), min_size=1, max_size=3),
    thr=st.sampled_from([0.2, 0.5, 0.7]),
)
def test_ssd_match_random(be, images, thr):
    gts = [[g for g, _ in img] for img in images]
    labs = [[l for _, l in img] for img in images]
    gt_t = [torch.tensor(g, dtype=torch.float64).reshape(-1, 4) for g in gts]
    lab_t = [torch.tensor(l, dtype=torch.long) for l in labs]
    priors = torch.tensor(PRIORS, dtype=torch.float64)
    with torch.no_grad():
        loc, lab = ops.ssd_match(gt_t, lab_t, priors, thr, backend=be)
    want_loc, want_lab = oracle.ssd_match(gts, labs, PRIORS, thr, (0.1, 0.2))
    assert lab.tolist() == want_lab
    want = torch.tensor(want_loc, dtype=torch.float64)
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(loc), finite)  # degenerate matched GTs give +-inf log targets
    torch.testing.assert_close(loc[finite], want[finite], rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not NATIVE, reason="native extension not active")
@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    b=st.integers(1, 3),
    c=st.integers(2, 5),
    st_=st.sampled_from([0.0, 0.05, 0.3]),
    it=thresholds,
    k=st.sampled_from([-1, 1, 10]),
    m=st.sampled_from([-1, 3, 50]),
    quant=st.booleans(),
)
def test_ssd_postprocess_native_equals_reference(seed, b, c, st_, it, k, m, quant):
    g = torch.Generator().manual_seed(seed)
    priors = torch.tensor(PRIORS, dtype=torch.float32)
    loc = torch.randn(b, len(PRIORS), 4, generator=g) * 0.5
    conf = torch.randn(b, len(PRIORS), c, generator=g)
    if quant:  # many equal scores and boxes
        loc, conf = loc.round(), conf.round()
    x = ops.ssd_postprocess(loc, conf, priors, st_, it, k, m, backend="native")
    y = ops.ssd_postprocess(loc, conf, priors, st_, it, k, m, backend="torch")
    for p, q in zip(x, y):
        assert torch.equal(p.boxes, q.boxes) and torch.equal(p.scores, q.scores) and torch.equal(p.labels, q.labels)


@pytest.mark.skipif(not NATIVE, reason="native extension not active")
@SETTINGS
@given(images=st.lists(st.lists(gt_box, max_size=6), min_size=1, max_size=4), thr=st.sampled_from([0.3, 0.5]))
def test_ssd_match_native_equals_reference_float32(images, thr):
    gt = [torch.tensor(i, dtype=torch.float32).reshape(-1, 4) for i in images]
    labels = [torch.arange(1, len(i) + 1) for i in images]
    priors = torch.tensor(PRIORS, dtype=torch.float32)
    a = ops.ssd_match(gt, labels, priors, thr, backend="native")
    b = ops.ssd_match(gt, labels, priors, thr, backend="torch")
    assert torch.equal(a[1], b[1])
    # the same values and the same NaN (a NaN must not pass for a 0, nor the reverse)
    assert torch.equal(a[0].isnan(), b[0].isnan())
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0, equal_nan=True)
