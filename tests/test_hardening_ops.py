"""Issue 10, the ops: argument checks (IoU thresholds in [0, 1], labels in
range, NaN offsets), the meta device, the reference NMS at large sizes, and a
fuzz test over the ops' inputs: every call gives a clear error or a correct result."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mtlkit.ops as ops
from mtlkit.errors import MtlkitError
from mtlkit.ops import reference

import _ops_oracle as oracle

NATIVE = ops.backend() == "native"
BACKENDS = ["torch"] + (["native"] if NATIVE else [])
PRIORS = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.3, 0.3]])


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("thr", [-0.5, 1.5, math.inf, -math.inf])
def test_iou_thresholds_outside_0_1_are_refused(be, thr):
    boxes, scores = torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6]]), torch.tensor([0.9, 0.8])
    with pytest.raises(ValueError, match=r"iou_threshold: expected a number in \[0, 1\]") as info:
        ops.nms(boxes, scores, thr, backend=be)
    assert isinstance(info.value, MtlkitError)
    with pytest.raises(ValueError, match="iou_threshold"):
        ops.batched_nms(boxes, scores, torch.tensor([0, 1]), thr, backend=be)
    with pytest.raises(ValueError, match="iou_threshold"):
        ops.ssd_match([boxes / 10], [torch.tensor([1, 2])], PRIORS, thr, backend=be)
    with pytest.raises(ValueError, match="iou_threshold"):
        ops.ssd_postprocess(torch.zeros(1, 3, 4), torch.zeros(1, 3, 2), PRIORS, 0.1, thr, 200, 200, backend=be)


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_match_labels_must_be_class_labels(be):
    gt = [torch.tensor([[0.0, 0, 0.5, 0.5]])]
    for bad in (-5, 0, 10**12):
        with pytest.raises(ValueError, match=rf"gt_labels: expected labels in .*got values from {bad} to {bad}"):
            ops.ssd_match(gt, [torch.tensor([bad])], PRIORS, 0.5, backend=be)
    with pytest.raises(ValueError, match=r"expected labels in 1..3, got values from 4 to 4"):
        ops.ssd_match(gt, [torch.tensor([4])], PRIORS, 0.5, num_classes=3, backend=be)
    _, labels = ops.ssd_match(gt, [torch.tensor([3])], PRIORS, 0.5, num_classes=3, backend=be)
    assert labels.tolist() == [[3, 0, 0]]


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_ssd_postprocess_gives_no_box_from_non_finite_offsets(be, bad):
    loc = torch.zeros(1, 3, 4)
    conf = torch.tensor([[[0.0, 5.0], [0.0, 5.0], [0.0, 5.0]]])
    loc[0, 1, 2] = bad
    det = ops.ssd_postprocess(loc, conf, PRIORS, 0.1, 0.5, 10, 10, backend=be)[0]
    assert torch.isfinite(det.boxes).all()
    assert det.boxes.shape[0] == 2  # the other two priors still detect
    priors = PRIORS.clone()
    priors[0, 0] = math.nan
    det = ops.ssd_postprocess(torch.zeros(1, 3, 4), conf, priors, 0.1, 0.5, 10, 10, backend=be)[0]
    assert torch.isfinite(det.boxes).all() and det.boxes.shape[0] == 2


def test_meta_tensors_shapes_or_a_clear_refusal():
    meta = torch.device("meta")
    boxes = torch.empty(5, 4, device=meta)
    assert ops.box_iou(boxes, torch.empty(3, 4, device=meta)).shape == (5, 3)
    assert ops.ssd_decode(torch.empty(2, 3, 4, device=meta), PRIORS.to(meta)).shape == (2, 3, 4)
    loc, labels = ops.ssd_match([torch.empty(2, 4, device=meta)],
                                [torch.empty(2, dtype=torch.int64, device=meta)], PRIORS.to(meta))
    assert loc.shape == (1, 3, 4) and labels.shape == (1, 3) and labels.dtype == torch.int64
    for call in (lambda: ops.nms(boxes, torch.empty(5, device=meta), 0.5),
                 lambda: ops.batched_nms(boxes, torch.empty(5, device=meta),
                                         torch.empty(5, dtype=torch.int64, device=meta), 0.5),
                 lambda: ops.ssd_postprocess(torch.empty(1, 3, 4, device=meta),
                                             torch.empty(1, 3, 2, device=meta), PRIORS.to(meta),
                                             0.01, 0.45, 200, 200)):
        with pytest.raises(ValueError, match="meta tensors are not supported"):
            call()


def _random_boxes(n, extent, size, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    return torch.cat([xy, xy + wh], 1).to(dtype), torch.rand(n, generator=g)


def _dense_nms(boxes, scores, thr, monkeypatch):
    monkeypatch.setattr(reference, "_NMS_GRID_MIN", 10**12)
    try:
        return reference.nms(boxes, scores, thr)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("seed", range(4))
def test_reference_nms_grid_equals_the_dense_loop(seed, monkeypatch):
    boxes, scores = _random_boxes(3000, 400, 40, seed)
    # adversarial extras: huge, degenerate, NaN, inverted boxes and duplicates
    extra = torch.tensor([[0.0, 0, 400, 400], [10, 10, 10, 50], [math.nan, 0, 1, 1], [5, 5, 1, 1],
                          [0, 0, 1e6, 1e6], [-1e30, -1e30, 1e30, 1e30]])
    boxes = torch.cat([boxes, extra, boxes[:50]])
    scores = torch.cat([scores, torch.rand(extra.shape[0] + 50, generator=torch.Generator().manual_seed(9))])
    for thr in (0.0, 0.3, 0.5, 0.9):
        want = _dense_nms(boxes, scores, thr, monkeypatch)
        monkeypatch.setattr(reference, "_NMS_GRID_MIN", 0)
        got = reference.nms(boxes, scores, thr)
        monkeypatch.undo()
        assert torch.equal(got, want), thr


def test_reference_nms_scales_to_200k_boxes():
    boxes, scores = _random_boxes(200_000, 5000, 60, 1)
    keep = ops.nms(boxes, scores, 0.5, backend="torch")  # the dense loop took minutes
    assert keep.numel() > 150_000
    if NATIVE:
        assert torch.equal(keep, ops.nms(boxes, scores, 0.5, backend="native"))


# -- fuzz: a clear error or a correct result --------------------------------------------
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, 0.5, 1.0, -1.0]))
thresholds = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.5, 1.0]),
                       st.none(), st.text(max_size=2), st.integers(-2, 2), st.booleans())
dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool])


def _tensor(values, shape, dtype):
    t = torch.tensor(values, dtype=torch.float64).reshape(shape)
    if dtype in (torch.int64, torch.bool):
        return torch.nan_to_num(t).clamp(-10, 10).to(dtype)
    return t.to(dtype)


@st.composite
def nms_inputs(draw):
    n = draw(st.integers(0, 12))
    width = draw(st.sampled_from([4, 4, 4, 3, 5]))
    values = draw(st.lists(floats, min_size=n * width, max_size=n * width))
    m = draw(st.sampled_from([n, n, n, max(0, n - 1)]))
    scores = draw(st.lists(floats, min_size=m, max_size=m))
    # half the thresholds valid, so that most well-formed examples reach the oracle
    return (_tensor(values, (n, width), draw(dtypes)), _tensor(scores, (m,), draw(dtypes)),
            draw(st.one_of(st.floats(0, 1), thresholds)))


def _clear(exc):
    message = str(exc)
    return isinstance(exc, MtlkitError) and message and "\n" not in message


@pytest.mark.parametrize("be", BACKENDS)
@FUZZ
@given(data=nms_inputs())
def test_fuzz_nms(be, data):
    boxes, scores, thr = data
    try:
        keep = ops.nms(boxes, scores, thr, backend=be)
    except (ValueError, TypeError) as exc:
        assert _clear(exc), repr(exc)
        return
    assert 0.0 <= float(thr) <= 1.0
    # the oracle on every example, on the values the op computes with (float16 -> float32; a
    # float32 IoU rounds, so an example with a pair within 1e-5 of the threshold is ambiguous)
    compute = torch.float64 if torch.float64 in (boxes.dtype, scores.dtype) else torch.float32
    b, sc = boxes.to(compute).double().tolist(), scores.to(compute).double().tolist()
    near = compute == torch.float32 and any(abs(oracle.iou(p, q) - float(thr)) < 1e-5
                                            for i, p in enumerate(b) for q in b[i + 1:])
    if not near:
        assert keep.tolist() == oracle.nms(b, sc, float(thr))


@st.composite
def match_inputs(draw):
    images = draw(st.integers(0, 3))
    gts, labels = [], []
    for _ in range(images):
        n = draw(st.integers(0, 4))
        coords = draw(st.lists(st.floats(0, 1), min_size=4 * n, max_size=4 * n))
        g = torch.tensor(coords, dtype=torch.float64).reshape(n, 4)
        g = torch.cat([torch.minimum(g[:, :2], g[:, 2:]), torch.maximum(g[:, :2], g[:, 2:]) + 0.01], 1)
        gts.append(g)
        labels.append(torch.tensor(draw(st.lists(st.integers(-3, 6), min_size=n, max_size=n)),
                                   dtype=torch.int64))
    return gts, labels, draw(thresholds), draw(st.sampled_from([None, 5]))


@pytest.mark.parametrize("be", BACKENDS)
@FUZZ
@given(data=match_inputs())
def test_fuzz_ssd_match(be, data):
    gts, labels, thr, num_classes = data
    priors = PRIORS.double()
    try:
        loc, lab = ops.ssd_match(gts, labels, priors, thr, num_classes=num_classes, backend=be)
    except (ValueError, TypeError) as exc:
        assert _clear(exc), repr(exc)
        return
    assert 0.0 <= float(thr) <= 1.0
    top = num_classes or 2**31 - 1
    assert all(((l >= 1) & (l <= top)).all() for l in labels)
    want_loc, want_lab = oracle.ssd_match([g.tolist() for g in gts], [l.tolist() for l in labels],
                                          priors.tolist(), float(thr), (0.1, 0.2))
    assert lab.tolist() == want_lab
    assert torch.allclose(loc, torch.tensor(want_loc, dtype=loc.dtype).reshape(loc.shape), atol=1e-9)


@pytest.mark.parametrize("be", BACKENDS)
@FUZZ
@given(loc=st.lists(floats, min_size=12, max_size=12), conf=st.lists(floats, min_size=6, max_size=6),
       st_=thresholds, it=thresholds, top_k=st.one_of(st.none(), st.integers(-1, 4), st.floats(0, 3)))
def test_fuzz_ssd_postprocess(be, loc, conf, st_, it, top_k):
    loc_t = torch.tensor(loc, dtype=torch.float32).reshape(1, 3, 4)
    conf_t = torch.tensor(conf, dtype=torch.float32).reshape(1, 3, 2)
    try:
        det = ops.ssd_postprocess(loc_t, conf_t, PRIORS, st_, it, top_k, 10, backend=be)[0]
    except (ValueError, TypeError) as exc:
        assert _clear(exc), repr(exc)
        return
    assert 0.0 <= float(it) <= 1.0
    assert torch.isfinite(det.boxes).all() and torch.isfinite(det.scores).all()
    assert ((det.labels >= 1) & (det.labels <= 1)).all()
    # scores pass the threshold (compared in float32 or float64: at the float32-rounded one at worst)
    assert (det.scores >= float(torch.tensor(float(st_), dtype=torch.float32))).all()
    assert (det.scores[:-1] >= det.scores[1:]).all()
