"""mtlkit.ops: the contract (DESIGN.md section 3) on both backends, native == reference,
edge cases, input checks, registration (fake kernels, autocast)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

import mtlkit.ops as ops
from mtlkit.errors import MtlkitError
from mtlkit.ops import reference

import _ops_oracle as oracle

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

NATIVE = ops.backend() == "native"
BACKENDS = ["torch"] + (["native"] if NATIVE else [])
needs_native = pytest.mark.skipif(not NATIVE, reason="native extension not active")


def rand_boxes(n, seed=0, extent=100.0, size=30.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    return torch.cat([xy, xy + wh], 1).to(dtype)


def priors_grid(f=6, sizes=(0.2, 0.45)):
    out = []
    for i in range(f):
        for j in range(f):
            for s in sizes:
                out.append([(j + 0.5) / f, (i + 0.5) / f, s, s * 0.8])
    return torch.tensor(out, dtype=torch.float64)


# ----------------------------------------------------------------------------- backend


def test_backend_names_the_active_implementation(monkeypatch):
    forced = os.environ.get("MTLKIT_OPS", "").strip().lower() == "torch"
    loaded = hasattr(torch.ops.mtlkit, "nms")  # the extension registered its ops
    assert ops.backend() == ("native" if loaded and not forced else "torch")
    assert (ops.native_error() is None) == (ops.backend() == "native")
    # the default backend is the one named: the reference runs when it says "torch"
    calls = []
    monkeypatch.setattr(reference, "box_iou", lambda a, b: calls.append(1) or torch.zeros(len(a), len(b)))
    ops.box_iou(torch.zeros(1, 4), torch.zeros(1, 4))
    assert calls == ([1] if ops.backend() == "torch" else [])


def _run(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_env_forces_reference_without_warning():
    r = _run(
        "import warnings; warnings.simplefilter('error'); import mtlkit.ops as o; print(o.backend())",
        MTLKIT_OPS="torch",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "torch"


def test_missing_extension_falls_back_with_one_warning():
    code = (
        "import sys, warnings; sys.modules['mtlkit._C'] = None\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, mtlkit.ops as o\n"
        "    b = o.backend(); o.backend(); o.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)\n"
        "msgs = [str(x.message) for x in w if 'mtlkit._C' in str(x.message)]\n"
        "print(b, len(msgs), msgs[0] if msgs else '')\n"
    )
    r = _run(code, MTLKIT_OPS="")
    assert r.returncode == 0, r.stderr
    name, count, msg = r.stdout.strip().split(" ", 2)
    assert name == "torch" and count == "1"
    assert "unavailable" in msg and "mtlkit._C halted" in msg


@pytest.mark.parametrize("value", ["bogus", "torc", "nativ"])
def test_an_unknown_MTLKIT_OPS_is_an_error_naming_it(value):
    r = _run("import torch, mtlkit.ops as o; o.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)",
             MTLKIT_OPS=value)
    assert r.returncode != 0
    assert "MTLKIT_OPS: expected one of auto, native, torch" in r.stderr and repr(value) in r.stderr


def test_MTLKIT_OPS_native_with_a_broken_build_fails_the_session_not_skips(tmp_path):
    """CI's native run: an extension that does not load stops pytest with the
    import error, instead of every native-only test skipping."""
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    (tmp_path / "conftest.py").write_text(
        "import sys\nsys.modules['mtlkit._C'] = None\n"
        + open(os.path.join(os.path.dirname(__file__), "conftest.py"), encoding="utf-8").read())
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=dict(os.environ, MTLKIT_OPS="native"))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "MTLKIT_OPS=native but the native extension does not load" in r.stdout + r.stderr


def test_bad_backend_argument():
    with pytest.raises(ValueError, match="backend"):
        ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5, backend="cuda")


# ----------------------------------------------------------------------------- box_iou


@pytest.mark.parametrize("be", BACKENDS)
def test_box_iou_matches_oracle(be):
    a, b = rand_boxes(17, 1), rand_boxes(23, 2)
    a[3] = torch.tensor([5.0, 5.0, 5.0, 9.0])  # zero area
    b[4] = torch.tensor([math.nan, 0.0, 1.0, 1.0])
    got = ops.box_iou(a, b, backend=be)
    want = [[oracle.iou(x, y) for y in b.tolist()] for x in a.tolist()]
    assert got.dtype == torch.float64
    assert got.tolist() == want
    assert not got.isnan().any()


@pytest.mark.parametrize("be", BACKENDS)
def test_box_iou_empty_and_half(be):
    assert ops.box_iou(torch.zeros(0, 4), torch.zeros(3, 4), backend=be).shape == (0, 3)
    assert ops.box_iou(torch.zeros(2, 4), torch.zeros(0, 4), backend=be).shape == (2, 0)
    a = rand_boxes(5, 3, dtype=torch.float16)
    out = ops.box_iou(a, a, backend=be)
    assert out.dtype == torch.float32
    assert torch.equal(out, ops.box_iou(a.float(), a.float(), backend=be))


@needs_native
def test_box_iou_native_equals_reference_float32():
    a, b = rand_boxes(300, 4, dtype=torch.float32), rand_boxes(200, 5, dtype=torch.float32)
    assert torch.equal(ops.box_iou(a, b, backend="native"), ops.box_iou(a, b, backend="torch"))


# ----------------------------------------------------------------------------- nms


@pytest.mark.parametrize("be", BACKENDS)
def test_nms_matches_oracle(be):
    for seed in range(3):
        boxes = rand_boxes(120, seed, extent=60)
        scores = torch.rand(120, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        for thr in (0.0, 0.3, 0.5, 0.7):
            keep = ops.nms(boxes, scores, thr, backend=be)
            assert keep.dtype == torch.int64
            assert keep.tolist() == oracle.nms(boxes.tolist(), scores.tolist(), thr)


@pytest.mark.parametrize("be", BACKENDS)
def test_nms_threshold_boundary_is_strict(be):
    boxes = torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 1]], dtype=torch.float64)  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert ops.nms(boxes, scores, 0.5, backend=be).tolist() == [0, 1]
    assert ops.nms(boxes, scores, math.nextafter(0.5, 0), backend=be).tolist() == [0]


@pytest.mark.parametrize("be", BACKENDS)
def test_nms_compares_float32_iou_in_double(be):
    # IoU 1/3 rounds up in float32 (0.33333334 > 1/3): suppressed, like torchvision's CPU kernel;
    # in float64 it equals the threshold: kept.
    boxes = torch.tensor([[0.0, 0, 1, 1], [0, 0, 3, 1]])
    scores = torch.tensor([0.9, 0.8])
    assert ops.nms(boxes, scores, 1 / 3, backend=be).tolist() == [0]
    assert ops.nms(boxes.double(), scores.double(), 1 / 3, backend=be).tolist() == [0, 1]


@pytest.mark.parametrize("be", BACKENDS)
def test_nms_ties_zero_area_nan_empty(be):
    e = ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5, backend=be)
    assert e.dtype == torch.int64 and e.shape == (0,)
    same = torch.tensor([[0.0, 0, 1, 1]] * 4)
    assert ops.nms(same, torch.ones(4), 0.5, backend=be).tolist() == [0]  # lower index first
    assert ops.nms(same, torch.tensor([1.0, 2, 2, 0]), 0.5, backend=be).tolist() == [1]
    # zero-area boxes never suppress and are never suppressed
    pts = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 2], [1, 1, 1, 3]])
    assert sorted(ops.nms(pts, torch.tensor([4.0, 3, 2, 1]), 0.0, backend=be).tolist()) == [0, 1, 2, 3]
    # NaN coordinates: IoU 0 with everything; a NaN score is dropped: it neither ranks first nor
    # suppresses box 0 (which it overlaps exactly)
    boxes = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [math.nan, 0, 1, 1], [0, 0, math.inf, 1]])
    scores = torch.tensor([0.5, math.nan, 0.7, 0.9])
    assert ops.nms(boxes, scores, 0.5, backend=be).tolist() == [3, 2, 0]
    idxs = torch.tensor([0, 0, 1, 1])
    assert ops.batched_nms(boxes, scores, idxs, 0.5, backend=be).tolist() == [3, 2, 0]


@needs_native
@pytest.mark.parametrize("n", [200, 3000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_native_equals_reference(n, dtype):
    boxes = rand_boxes(n, n, extent=300, size=40, dtype=dtype)
    boxes[::97, 2:] = boxes[::97, :2]  # some zero-area boxes
    boxes[5::101] = torch.tensor([0.0, 0, 300, 300], dtype=dtype)  # big boxes (grid "big" list)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(n)).to(dtype)
    scores[::7] = scores[3]  # ties
    for thr in (0.3, 0.5, 0.8):
        assert torch.equal(ops.nms(boxes, scores, thr, backend="native"), ops.nms(boxes, scores, thr, backend="torch"))


@needs_native
def test_nms_native_heavy_overlap_and_negative_threshold():
    boxes = rand_boxes(1500, 9, extent=10, size=20, dtype=torch.float32)
    scores = torch.rand(1500, generator=torch.Generator().manual_seed(9))
    for thr in (0.0, 0.1, 0.9):
        assert torch.equal(ops.nms(boxes, scores, thr, backend="native"), ops.nms(boxes, scores, thr, backend="torch"))
    # a negative threshold (which suppressed everything but one box) is refused since issue 10
    for be in ("native", "torch"):
        with pytest.raises(ValueError, match=r"iou_threshold: expected a number in \[0, 1\], got -0.1"):
            ops.nms(boxes, scores, -0.1, backend=be)


@needs_native
def test_nms_native_equals_reference_20k():
    boxes = rand_boxes(20000, 11, extent=1000, size=100, dtype=torch.float32)
    scores = torch.rand(20000, generator=torch.Generator().manual_seed(11))
    assert torch.equal(ops.nms(boxes, scores, 0.5, backend="native"), ops.nms(boxes, scores, 0.5, backend="torch"))


# ----------------------------------------------------------------------------- batched_nms


@pytest.mark.parametrize("be", BACKENDS)
def test_batched_nms_matches_oracle(be):
    boxes = rand_boxes(150, 7, extent=50)
    g = torch.Generator().manual_seed(7)
    scores = torch.rand(150, generator=g, dtype=torch.float64)
    scores[::5] = 0.5  # ties across groups
    idxs = torch.randint(0, 4, (150,), generator=g)
    keep = ops.batched_nms(boxes, scores, idxs, 0.4, backend=be)
    assert keep.tolist() == oracle.batched_nms(boxes.tolist(), scores.tolist(), idxs.tolist(), 0.4)
    e = ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5, backend=be)
    assert e.shape == (0,) and e.dtype == torch.int64


@needs_native
def test_batched_nms_native_equals_reference():
    boxes = rand_boxes(4000, 8, extent=200, size=40, dtype=torch.float32)
    g = torch.Generator().manual_seed(8)
    scores = torch.rand(4000, generator=g)
    idxs = torch.randint(-3, 20, (4000,), generator=g, dtype=torch.int32)
    a = ops.batched_nms(boxes, scores, idxs, 0.5, backend="native")
    assert torch.equal(a, ops.batched_nms(boxes, scores, idxs, 0.5, backend="torch"))


# ----------------------------------------------------------------------------- ssd_match


def _to_lists(gt_boxes, gt_labels):
    return [g.tolist() for g in gt_boxes], [l.tolist() for l in gt_labels]


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_match_matches_oracle(be):
    priors = priors_grid()
    g = torch.Generator().manual_seed(3)
    gt_boxes, gt_labels = [], []
    for n in (3, 0, 5, 1):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.7
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.4 + 0.02
        gt_boxes.append(torch.cat([xy, xy + wh], 1))
        gt_labels.append(torch.randint(1, 9, (n,), generator=g))
    gt_boxes[3] = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)  # on the image borders
    for thr in (0.3, 0.5):
        loc, lab = ops.ssd_match(gt_boxes, gt_labels, priors, thr, (0.1, 0.2), backend=be)
        assert loc.shape == (4, priors.shape[0], 4) and lab.shape == (4, priors.shape[0])
        assert loc.dtype == torch.float64 and lab.dtype == torch.int64
        want_loc, want_lab = oracle.ssd_match(*_to_lists(gt_boxes, gt_labels), priors.tolist(), thr, (0.1, 0.2))
        assert lab.tolist() == want_lab
        torch.testing.assert_close(loc, torch.tensor(want_loc, dtype=torch.float64), rtol=1e-12, atol=1e-12)
        assert (lab[1] == 0).all() and (loc[1] == 0).all()  # image without GT
        assert (loc[lab == 0] == 0).all()


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_match_forced_ties_and_boundary(be):
    # priors: 0 and 1 identical, 2 elsewhere
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], dtype=torch.float64)
    # GT 0 overlaps prior 0/1 weakly (forced to prior 0, the lowest index); GT 1 has the same box (later GT wins)
    weak = [0.0, 0.0, 0.1, 0.1]
    half = [0.5, 0.5, 1.0, 0.75]  # IoU with prior 2 = 0.5 exactly
    loc, lab = ops.ssd_match(
        [torch.tensor([weak, weak, half], dtype=torch.float64)], [torch.tensor([3, 4, 5])], priors, 0.5, backend=be
    )
    assert lab.tolist() == [[4, 0, 5]]
    _, lab = ops.ssd_match([torch.tensor([half], dtype=torch.float64)], [torch.tensor([7])], priors,
                           math.nextafter(0.5, 1), backend=be)
    assert lab.tolist() == [[0, 0, 7]]  # forced (its best prior) even above the threshold
    # a GT overlapping no prior is not forced; degenerate GT too
    _, lab = ops.ssd_match([torch.tensor([[2.0, 2, 3, 3], [0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)],
                           [torch.tensor([1, 2])], priors, 0.5, backend=be)
    assert lab.tolist() == [[0, 0, 0]]


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_match_encoding_round_trips(be):
    priors = priors_grid(4).float()
    gt = [torch.tensor([[0.1, 0.2, 0.5, 0.7], [0.4, 0.1, 0.9, 0.6]])]
    loc, lab = ops.ssd_match(gt, [torch.tensor([1, 2])], priors, 0.4, backend=be)
    dec = ops.ssd_decode(loc, priors, backend=be)[0]
    pos = lab[0] > 0
    assert pos.sum() >= 2
    want = gt[0][lab[0][pos] - 1]
    torch.testing.assert_close(dec[pos], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_match_input_errors(be):
    priors = priors_grid(2)
    with pytest.raises(ValueError, match="gt_labels"):
        ops.ssd_match([torch.zeros(1, 4)], [], priors, backend=be)
    with pytest.raises(ValueError, match=r"gt_labels\[0\]"):
        ops.ssd_match([torch.zeros(2, 4)], [torch.ones(3, dtype=torch.long)], priors, backend=be)
    with pytest.raises(TypeError, match=r"gt_labels\[0\]"):
        ops.ssd_match([torch.zeros(1, 4)], [torch.ones(1)], priors, backend=be)
    with pytest.raises(TypeError, match="gt_boxes"):
        ops.ssd_match(torch.zeros(1, 1, 4), [torch.ones(1, dtype=torch.long)], priors, backend=be)
    with pytest.raises(ValueError, match="priors"):
        ops.ssd_match([torch.zeros(1, 4)], [torch.ones(1, dtype=torch.long)], priors[:, :3], backend=be)
    with pytest.raises(ValueError, match="variances"):
        ops.ssd_match([torch.zeros(1, 4)], [torch.ones(1, dtype=torch.long)], priors, variances=(0.1,), backend=be)
    with pytest.raises(MtlkitError):
        ops.ssd_match([torch.zeros(1, 5)], [torch.ones(1, dtype=torch.long)], priors, backend=be)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssd_match_native_equals_reference(dtype):
    import _ops_data

    priors = _ops_data.ssd300_priors().to(dtype)
    gt, labels = _ops_data.random_gt(8, seed=5)
    gt = [g.to(dtype) for g in gt]
    gt[2] = gt[2][:0]
    labels[2] = labels[2][:0]
    a = ops.ssd_match(gt, labels, priors, backend="native")
    b = ops.ssd_match(gt, labels, priors, backend="torch")
    assert torch.equal(a[1], b[1])
    if dtype == torch.float32:
        assert torch.equal(a[0], b[0])
    else:  # log() may differ by one ulp between libm and torch in float64
        torch.testing.assert_close(a[0], b[0], rtol=1e-14, atol=1e-14)


@needs_native
def test_ssd_match_native_equals_reference_batch64():
    import _ops_data

    priors = _ops_data.ssd300_priors()
    gt, labels = _ops_data.random_gt(64, seed=6, max_objects=30)
    a = ops.ssd_match(gt, labels, priors, backend="native")
    b = ops.ssd_match(gt, labels, priors, backend="torch")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- decode / postprocess


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_decode_matches_oracle(be):
    priors = priors_grid(3)
    loc = torch.randn(2, priors.shape[0], 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = ops.ssd_decode(loc, priors, (0.1, 0.2), backend=be)
    want = [[oracle.decode(l, p, (0.1, 0.2)) for l, p in zip(img, priors.tolist())] for img in loc.tolist()]
    torch.testing.assert_close(out, torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=1e-14)
    assert ops.ssd_decode(loc[0], priors, backend=be).shape == (priors.shape[0], 4)
    with pytest.raises(ValueError, match="loc"):
        ops.ssd_decode(loc[:, :3], priors, backend=be)


@needs_native
def test_ssd_decode_native_equals_reference_float32():
    priors = priors_grid(8).float()
    loc = torch.randn(3, priors.shape[0], 4, generator=torch.Generator().manual_seed(1)) * 2
    loc[0, 0] = torch.tensor([math.nan, 0.0, 100.0, -100.0])
    a, b = ops.ssd_decode(loc, priors, backend="native"), ops.ssd_decode(loc, priors, backend="torch")
    assert a[0, 0, [0, 2]].isnan().all() and not a[0, 0, [1, 3]].isnan().any()
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _check_postprocess_against_oracle(dets, loc, conf, priors, st, it, k, m):
    probs = torch.softmax(conf, -1)
    # boxes decoded by the oracle (Python floats), not by the reference: the
    # reference's own decode would check the torch backend against itself
    boxes = [[oracle.decode(l, p, (0.1, 0.2)) for l, p in zip(img, priors.tolist())] for img in loc.tolist()]
    for b, d in enumerate(dets):
        want = oracle.postprocess(boxes[b], probs[b].tolist(), st, it, k, m)
        assert d.scores.tolist() == [w[0] for w in want]
        assert d.labels.tolist() == [w[1] for w in want]
        # float64 decoding: libm and torch's exp may differ by one ulp
        want_boxes = torch.tensor([boxes[b][w[2]] for w in want], dtype=d.boxes.dtype).reshape(-1, 4)
        torch.testing.assert_close(d.boxes, want_boxes, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_postprocess_matches_oracle(be):
    priors = priors_grid(5)
    g = torch.Generator().manual_seed(2)
    loc = torch.randn(3, priors.shape[0], 4, generator=g, dtype=torch.float64) * 0.3
    conf = torch.randn(3, priors.shape[0], 4, generator=g, dtype=torch.float64) * 2
    conf[1, :5] = conf[1, 5]  # equal scores on different priors
    conf[2] = -50.0  # nothing passes 0.05 except background
    conf[2, :, 0] = 50.0
    for st, it, k, m in [(0.05, 0.45, 200, 200), (0.2, 0.3, 5, 7), (0.0, 0.6, -1, -1)]:
        dets = ops.ssd_postprocess(loc, conf, priors, st, it, k, m, backend=be)
        assert len(dets) == 3
        _check_postprocess_against_oracle(dets, loc, conf, priors, st, it, k, m)
        if st > 0:
            assert len(dets[2].scores) == 0 and dets[2].boxes.shape == (0, 4)
        if m > 0:
            assert all(len(d.scores) <= m for d in dets)


@pytest.mark.parametrize("be", BACKENDS)
def test_ssd_postprocess_nan_and_errors(be):
    priors = priors_grid(2)
    loc = torch.zeros(1, priors.shape[0], 4)
    conf = torch.zeros(1, priors.shape[0], 3)
    conf[0, 0, 1] = math.nan  # that prior's softmax row is NaN: no detection from it
    loc[0, 1, 0] = math.nan  # NaN box: kept (IoU 0 with all) when its score passes
    dets = ops.ssd_postprocess(loc, conf, priors, 0.1, 0.5, 10, 10, backend=be)
    assert 0 not in dets[0].labels.tolist()
    assert not dets[0].scores.isnan().any()
    with pytest.raises(ValueError, match="conf"):
        ops.ssd_postprocess(loc, conf[:, :-1], priors, 0.01, 0.45, 200, 200, backend=be)
    with pytest.raises(ValueError, match="priors"):
        ops.ssd_postprocess(loc, conf, priors[:-1], 0.01, 0.45, 200, 200, backend=be)
    with pytest.raises(TypeError, match="top_k"):
        ops.ssd_postprocess(loc, conf, priors, 0.01, 0.45, top_k=2.5, max_detections=200, backend=be)
    with pytest.raises(TypeError, match="score_threshold"):
        ops.ssd_postprocess(loc, conf, priors, score_threshold="0.1", iou_threshold=0.45, top_k=200,
                            max_detections=200, backend=be)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ssd_postprocess_native_equals_reference(dtype):
    import _ops_data

    priors = _ops_data.ssd300_priors()
    loc, conf = _ops_data.random_head(2, priors, seed=4)
    loc, conf = loc.to(dtype), conf.to(dtype)
    a = ops.ssd_postprocess(loc, conf, priors, 0.01, 0.45, 200, 200, backend="native")
    b = ops.ssd_postprocess(loc, conf, priors, 0.01, 0.45, 200, 200, backend="torch")
    for x, y in zip(a, b):
        assert x.boxes.dtype == torch.float32
        assert torch.equal(x.boxes, y.boxes) and torch.equal(x.scores, y.scores) and torch.equal(x.labels, y.labels)


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("be", BACKENDS)
def test_input_errors_name_the_argument(be):
    with pytest.raises(ValueError, match="boxes") as e:
        ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5, backend=be)
    assert isinstance(e.value, MtlkitError)
    with pytest.raises(ValueError, match="scores"):
        ops.nms(torch.zeros(3, 4), torch.zeros(2), 0.5, backend=be)
    with pytest.raises(TypeError, match="boxes"):
        ops.nms(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), 0.5, backend=be)
    with pytest.raises(TypeError, match="iou_threshold"):
        ops.nms(torch.zeros(3, 4), torch.zeros(3), None, backend=be)
    with pytest.raises(ValueError, match="iou_threshold"):
        ops.nms(torch.zeros(3, 4), torch.zeros(3), math.nan, backend=be)
    with pytest.raises(TypeError, match="idxs"):
        ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3), 0.5, backend=be)
    with pytest.raises(ValueError, match="same device"):
        ops.box_iou(torch.zeros(3, 4), torch.zeros(3, 4, device="meta"), backend=be)
    with pytest.raises(TypeError, match="a"):
        ops.box_iou([[0, 0, 1, 1]], torch.zeros(3, 4), backend=be)


# ----------------------------------------------------------------------------- registration


@needs_native
def test_fake_kernels_and_schemas():
    b = rand_boxes(6, 0, dtype=torch.float32)
    s = torch.rand(6)
    pri = priors_grid(2).float()
    cases = [
        (torch.ops.mtlkit.box_iou.default, (b, b)),
        (torch.ops.mtlkit.ssd_decode.default, (torch.zeros(2, pri.shape[0], 4), pri, 0.1, 0.2)),
        (
            torch.ops.mtlkit.ssd_match.default,
            (b[:3] / 100, torch.tensor([1, 2, 3]), torch.tensor([0, 1, 3]), pri, 0.5, 0.1, 0.2),
        ),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
    # data-dependent output sizes: the fake kernels give unbacked sizes
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        fb, fs = mode.from_tensor(b), mode.from_tensor(s)
        keep = torch.ops.mtlkit.nms(fb, fs, 0.5)
        assert keep.dtype == torch.int64 and keep.dim() == 1
        out = torch.ops.mtlkit.ssd_postprocess(
            mode.from_tensor(torch.zeros(2, pri.shape[0], 4)),
            mode.from_tensor(torch.zeros(2, pri.shape[0], 3)),
            mode.from_tensor(pri), 0.1, 0.5, 10, 10, 0.1, 0.2,
        )
        assert out[0].shape[1] == 4 and out[3].shape == (2,)


@needs_native
def test_autocast_runs_in_float32():
    b = rand_boxes(8, 1, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.ops.mtlkit.box_iou(b.bfloat16(), b.bfloat16())
        keep = torch.ops.mtlkit.nms(b.bfloat16(), torch.rand(8).bfloat16(), 0.5)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.ops.mtlkit.box_iou(b.bfloat16().float(), b.bfloat16().float()))
    assert keep.dtype == torch.int64


def _compiled_pipeline(loc, conf, priors, boxes, scores):
    keep = torch.ops.mtlkit.nms(boxes, scores, 0.5)
    dec = torch.ops.mtlkit.ssd_decode(loc, priors, 0.1, 0.2)
    iou = torch.ops.mtlkit.box_iou(dec[0], priors)
    out = torch.ops.mtlkit.ssd_postprocess(loc, conf, priors, 0.05, 0.5, 10, 10, 0.1, 0.2)
    return keep, iou, out[1].sum()


@needs_native
@pytest.mark.parametrize("compiler", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_ops_under_torch_compile_fullgraph(compiler):
    import torch._dynamo

    pri = priors_grid(3).float()
    loc = torch.randn(2, pri.shape[0], 4) * 0.1
    conf = torch.randn(2, pri.shape[0], 3)
    boxes = rand_boxes(30, 3, dtype=torch.float32)
    scores = torch.rand(30)
    want = _compiled_pipeline(loc, conf, pri, boxes, scores)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        got = torch.compile(_compiled_pipeline, backend=compiler, fullgraph=True)(loc, conf, pri, boxes, scores)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    torch.testing.assert_close(got[2], want[2])
