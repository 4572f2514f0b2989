"""Stage ``ops_exact``: every CUDA op of ``mtlkit.ops`` against its CPU result
on random and adversarial inputs (empty, zero-area, ties, NaN / inf, 100k
boxes), exact where the contract (DESIGN.md section 3, docs/ops.md) says
exact.

On a GPU the target is the CUDA kernel and the oracle the CPU kernel (itself
bit-identical to the PyTorch reference, tests/test_ops.py). In the dry run
(no GPU) the target is the CPU kernel and the oracle the reference, so the
same cases and comparisons run.

The one tolerance: ``ssd_postprocess`` scores come from CUDA's softmax, which
may differ from the CPU's in the last bit (docs/ops.md); float64 encodings
and decodings may differ by one ulp of exp / log. Everything discrete (keep
lists, labels, matches) must be identical.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mtlkit.ops as ops  # noqa: E402
from _ops_data import random_gt, random_head, ssd300_priors  # noqa: E402
from common import Results  # noqa: E402
from profiles import Profile  # noqa: E402


class Pair:
    """How the target and the oracle run an op: ``target(name, *args)`` on the
    target device, ``oracle(name, *args)`` on the CPU (inputs moved for each)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.gpu = device.type == "cuda"
        self.label = "CUDA vs CPU" if self.gpu else "CPU kernel vs reference (dry run)"

    def _to(self, x, device):
        if isinstance(x, torch.Tensor):
            return x.to(device)
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
            return [t.to(device) for t in x]
        return x

    def target(self, name: str, *args, **kw):
        args = [self._to(a, self.device) for a in args]
        return getattr(ops, name)(*args, **kw, backend="native")

    def oracle(self, name: str, *args, **kw):
        args = [self._to(a, "cpu") for a in args]
        return getattr(ops, name)(*args, **kw, backend="native" if self.gpu else "torch")


def _cpu(x):
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu(v) for v in x)
    return x


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and values, NaN equal to NaN."""
    a, b = _cpu(a), _cpu(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(torch.nan_to_num(a, nan=-7.25), torch.nan_to_num(b, nan=-7.25))
                    and torch.equal(a.isnan(), b.isnan()))
    return bool(torch.equal(a, b))


def _max_ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference in units in the last place (finite values)."""
    a, b = _cpu(a).double(), _cpu(b).double()
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not bool(finite.any()):
        return 0.0
    eps = torch.finfo(_cpu(a).dtype if a.dtype != torch.float64 else torch.float64).eps
    scale = torch.maximum(a.abs(), b.abs()).clamp_min(torch.finfo(torch.float64).tiny)
    return float(((a - b).abs() / (scale * eps))[finite].max())


#: float64 encodings / decodings may differ by one ulp of exp / log (docs/ops.md);
#: boxes and offsets here are O(1), so 1e-15 is a few ulps of the result
F64_NOTE = "float64: exp / log may differ by 1 ulp (docs/ops.md)"


def _close64(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = _cpu(a), _cpu(b)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=0, atol=1e-15, equal_nan=True))


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------
def boxes_scores(n: int, seed: int, extent: float = 1000.0, size: float = 100.0,
                 dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    return torch.cat([xy, xy + wh], 1).to(dtype), torch.rand(n, generator=g, dtype=torch.float64).to(dtype)


def adversarial_boxes(n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random boxes with every kind of trouble mixed in: zero-area (points and
    lines), inverted corners, duplicates, NaN and inf coordinates, NaN and
    tied scores, heavy overlap (a small extent)."""
    boxes, scores = boxes_scores(n, seed, extent=200.0, size=60.0)
    g = torch.Generator().manual_seed(seed + 1)
    k = max(1, n // 16)
    idx = lambda: torch.randint(0, n, (k,), generator=g)  # noqa: E731
    if n:
        boxes[idx(), 2] = boxes[idx(), 0]  # zero width (overwritten rows: some lines, some points)
        i = idx()
        boxes[i, 3] = boxes[i, 1]
        i = idx()
        boxes[i, 0], boxes[i, 2] = boxes[i, 2].clone(), boxes[i, 0].clone()  # inverted
        i, j = idx(), idx()
        boxes[i] = boxes[j]  # duplicates
        scores[i] = scores[j]
        boxes[idx(), 1] = float("nan")
        boxes[idx(), 2] = float("inf")
        boxes[idx(), 0] = float("-inf")
        scores[idx()] = float("nan")
        scores[idx()] = 0.5  # ties
        scores[idx()] = float("inf")
    return boxes, scores


# ---------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------
def check_box_iou(res: Results, pair: Pair, profile: Profile) -> None:
    cases = [("random 300x500", *(boxes_scores(300, 1)[0], boxes_scores(500, 2)[0])),
             ("adversarial 400x400", adversarial_boxes(400, 3)[0], adversarial_boxes(400, 4)[0]),
             ("empty 0x5", torch.zeros(0, 4), boxes_scores(5, 5)[0]),
             ("empty 5x0", boxes_scores(5, 6)[0], torch.zeros(0, 4)),
             ("float64 random 200x300", boxes_scores(200, 7, dtype=torch.float64)[0],
              boxes_scores(300, 8, dtype=torch.float64)[0])]
    for name, a, b in cases:
        try:
            t, o = pair.target("box_iou", a, b), pair.oracle("box_iou", a, b)
            ok = _equal(t, o) and not bool(_cpu(t).isnan().any())
            res.add(f"box_iou {name}", "identical" if ok else "DIFFERENT", pair.label, ok)
        except Exception as exc:  # noqa: BLE001 - one failed case must not hide the others
            res.error(f"box_iou {name}", exc)


def _nms_cases(profile: Profile) -> List[Tuple[str, torch.Tensor, torch.Tensor]]:
    cases = []
    for n in profile.exact_sizes:
        boxes, scores = boxes_scores(n, n)
        scores[::3] = 0.5  # ties
        cases.append((f"n={n} ties", boxes, scores))
    big, big_scores = boxes_scores(profile.big_n, 11, extent=3000.0)
    cases.append((f"n={profile.big_n}", big, big_scores))
    cases.append((f"n={min(profile.big_n, 20000)} all scores equal",
                  *(lambda b, s: (b, torch.full_like(s, 0.25)))(*boxes_scores(min(profile.big_n, 20000), 12))))
    cases.append(("adversarial n=2000 (zero-area, NaN, inf, duplicates)", *adversarial_boxes(2000, 13)))
    cases.append(("adversarial n=300", *adversarial_boxes(300, 14)))
    same = torch.tensor([[10.0, 10.0, 50.0, 50.0]]).repeat(100, 1)
    cases.append(("100 identical boxes, equal scores", same, torch.ones(100)))
    cases.append(("float64 n=5000", *boxes_scores(5000, 15, dtype=torch.float64)))
    return cases


def check_nms(res: Results, pair: Pair, profile: Profile) -> None:
    for name, boxes, scores in _nms_cases(profile):
        for thr in (0.0, 0.5, 1.0) if boxes.shape[0] <= 2000 else (0.5,):
            item = f"nms {name} iou>{thr}"
            try:
                t, o = pair.target("nms", boxes, scores, thr), pair.oracle("nms", boxes, scores, thr)
                ok = _equal(t, o)
                res.add(item, f"identical ({o.numel()} kept)" if ok else
                        f"DIFFERENT ({_cpu(t).numel()} vs {o.numel()} kept)", pair.label, ok)
            except Exception as exc:  # noqa: BLE001
                res.error(item, exc)


def check_batched_nms(res: Results, pair: Pair, profile: Profile) -> None:
    g = torch.Generator().manual_seed(21)
    n_big = profile.big_n
    cases = []
    b, s = boxes_scores(5000 if profile.big_n > 5000 else 800, 22, extent=300.0)
    cases.append(("n=%d, 7 groups" % b.shape[0], b, s, torch.randint(0, 7, (b.shape[0],), generator=g)))
    b, s = boxes_scores(n_big, 23, extent=2000.0)
    cases.append((f"n={n_big}, 80 groups", b, s, torch.randint(0, 80, (n_big,), generator=g)))
    b, s = adversarial_boxes(1500, 24)
    cases.append(("adversarial n=1500, int32 idxs with negatives",
                  b, s, torch.randint(-3, 4, (1500,), generator=g, dtype=torch.int32)))
    b, s = boxes_scores(600, 25, extent=100.0)
    cases.append(("n=600, one group, huge idx", b, s, torch.full((600,), 2**40, dtype=torch.int64)))
    cases.append(("empty", torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)))
    for name, boxes, scores, idxs in cases:
        item = f"batched_nms {name}"
        try:
            t = pair.target("batched_nms", boxes, scores, idxs, 0.5)
            o = pair.oracle("batched_nms", boxes, scores, idxs, 0.5)
            ok = _equal(t, o)
            res.add(item, f"identical ({o.numel()} kept)" if ok else "DIFFERENT", pair.label, ok)
        except Exception as exc:  # noqa: BLE001
            res.error(item, exc)


def check_decode(res: Results, pair: Pair, profile: Profile) -> None:
    priors = ssd300_priors()
    loc, _ = random_head(4, priors, seed=31)
    wild = loc.clone()
    wild[0, :50] = 400.0  # exp overflow -> inf boxes
    wild[1, :50] = float("nan")
    wild[2, :50] = -400.0
    for name, l, p in (("float32 random", loc, priors), ("float32 overflow / NaN", wild, priors),
                       ("float64 random", loc.double(), priors.double())):
        item = f"ssd_decode {name}"
        try:
            t, o = pair.target("ssd_decode", l, p), pair.oracle("ssd_decode", l, p)
            if l.dtype == torch.float64:
                close = _close64(t, o)
                res.add(item, "within 1e-15" if close else "DIFFERENT beyond 1e-15", F64_NOTE, close)
            else:
                ok = _equal(t, o)
                res.add(item, "identical" if ok else f"DIFFERENT (max {_max_ulps(t, o):.2g} ulp)",
                        pair.label, ok)
        except Exception as exc:  # noqa: BLE001
            res.error(item, exc)


def _paper_priors() -> torch.Tensor:
    """The 7228 priors of the paper's SSD at 480x640 (configs/nyuv2: source maps
    30x40 ... 1x1, the detection task's default aspect ratios and scales)."""
    from mtlkit.models.ssd.priors import make_priors

    sizes = [(30, 40), (15, 20), (8, 10), (4, 5), (2, 3), (1, 1)]
    return make_priors(sizes, [[2], [2, 3], [2, 3], [2, 3], [2], [2]], 0.1, 0.9)


def _match_cases(profile: Profile, paper_priors: torch.Tensor) -> list:
    priors = ssd300_priors()
    cases = []
    gt, labels = random_gt(32 if profile.device == "cuda" else 8, seed=41, max_objects=20)
    gt[5], labels[5] = gt[5][:0], labels[5][:0]
    cases.append(("random B=%d, one image without GT" % len(gt), gt, labels, priors, 0.5))
    gt, labels = random_gt(profile.match_batch, seed=42, max_objects=30)
    cases.append((f"paper priors P={paper_priors.shape[0]}, B={profile.match_batch}", gt, labels,
                  paper_priors, 0.5))
    # ties: duplicated GT (lowest index wins), GT sharing a best prior (the later wins)
    box = torch.tensor([[0.2, 0.2, 0.45, 0.5]])
    twins = [torch.cat([box, box, box + 0.001, box]), torch.cat([box, box * 0.999])]
    cases.append(("duplicate GT / shared best prior", twins,
                  [torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6])], priors, 0.5))
    # zero-area, outside [0, 1], NaN, inf GT mixed with valid ones
    bad = torch.tensor([[0.3, 0.3, 0.3, 0.6], [0.5, 0.5, 0.5, 0.5], [1.5, 1.5, 1.9, 1.9],
                        [float("nan"), 0.1, 0.4, 0.4], [0.1, 0.1, float("inf"), 0.3],
                        [0.6, 0.6, 0.9, 0.95], [-0.5, -0.5, -0.1, -0.1]])
    cases.append(("zero-area / outside / NaN / inf GT", [bad, bad[5:]],
                  [torch.arange(1, 8), torch.tensor([3, 4])], priors, 0.5))
    gt, labels = random_gt(6, seed=43, max_objects=12)
    cases.append(("threshold 0", gt, labels, priors, 0.0))
    cases.append(("threshold 1", gt, labels, priors, 1.0))
    many, many_labels = random_gt(2, seed=44, max_objects=1)
    g = torch.Generator().manual_seed(45)
    xy = torch.rand(200, 2, generator=g) * 0.9
    many = [torch.cat([xy, xy + 0.05 + torch.rand(200, 2, generator=g) * 0.1], 1).clamp(max=1.0), many[1]]
    cases.append(("200 GT in one image", many, [torch.randint(1, 20, (200,), generator=g), many_labels[1]],
                  priors, 0.5))
    cases.append(("float64", [x.double() for x in random_gt(4, seed=46)[0]], random_gt(4, seed=46)[1],
                  priors.double(), 0.5))
    cases.append(("no image", [], [], priors, 0.5))
    return cases


def check_match(res: Results, pair: Pair, profile: Profile) -> None:
    paper = _paper_priors()
    for name, gt, labels, priors, thr in _match_cases(profile, paper):
        item = f"ssd_match {name}"
        try:
            tl, tlab = pair.target("ssd_match", gt, labels, priors, thr)
            ol, olab = pair.oracle("ssd_match", gt, labels, priors, thr)
            same_labels = _equal(tlab, olab)
            if priors.dtype == torch.float64:
                ok = same_labels and _close64(tl, ol)
                detail = ("labels identical, loc within 1e-15" if ok else
                          "labels identical, loc DIFFERENT" if same_labels else "labels DIFFERENT")
            else:
                ok = same_labels and _equal(tl, ol)
                detail = "identical" if ok else ("loc DIFFERENT" if same_labels else "labels DIFFERENT")
            positives = int((_cpu(olab) > 0).sum())
            res.add(item, f"{detail} ({positives} positives)", pair.label, ok)
        except Exception as exc:  # noqa: BLE001
            res.error(item, exc)


def _compare_dets(t, o) -> Tuple[bool, str]:
    """Labels identical, boxes identical (float32) or within 1e-15 (float64),
    scores to 1e-6 (CUDA's softmax may round differently)."""
    if len(t) != len(o):
        return False, f"{len(t)} vs {len(o)} images"
    total = 0
    for i, (x, y) in enumerate(zip(t, o)):
        total += y.labels.numel()
        if not _equal(x.labels, y.labels):
            return False, f"labels DIFFERENT in image {i} ({_cpu(x.labels).numel()} vs {y.labels.numel()})"
        same_boxes = _close64(x.boxes, y.boxes) if y.boxes.dtype == torch.float64 else _equal(x.boxes, y.boxes)
        if not same_boxes:
            return False, f"boxes DIFFERENT in image {i}"
        xs, ys = _cpu(x.scores), _cpu(y.scores)
        if xs.shape != ys.shape or not torch.allclose(xs, ys, rtol=1e-6, atol=1e-7):
            return False, f"scores DIFFERENT in image {i}"
    return True, f"identical ({total} detections)"


def check_postprocess(res: Results, pair: Pair, profile: Profile) -> None:
    priors = ssd300_priors()
    B = profile.post_batch
    loc, conf = random_head(B, priors, seed=51)
    tied = conf.round()
    broken_loc, broken_conf = loc.clone(), conf.clone()
    broken_conf[0, :100] = float("nan")
    broken_conf[-1, 100:200, 3] = float("inf")
    broken_loc[0, 200:300] = 500.0  # decodes to inf boxes: never a detection
    broken_loc[-1, 300:400, 1] = float("nan")
    cases = [("random", loc, conf, (0.01, 0.45, 200, 200)),
             ("rounded logits (ties)", loc, tied, (0.01, 0.45, 200, 100)),
             ("NaN / inf scores and boxes", broken_loc, broken_conf, (0.01, 0.45, 200, 200)),
             ("no top_k, no max_detections", loc[:2], conf[:2], (0.05, 0.5, -1, -1)),
             ("top_k 5, max_detections 20", loc, conf, (0.01, 0.45, 5, 20)),
             ("score_threshold 0, iou 1", loc[:2], conf[:2], (0.0, 1.0, 200, 200)),
             ("score_threshold 0.99 (empty)", loc, conf, (0.99, 0.45, 200, 200)),
             ("float64", loc[:2].double(), conf[:2].double(), (0.01, 0.45, 200, 200))]
    for name, l, c, (st, it, k, m) in cases:
        item = f"ssd_postprocess {name}"
        try:
            t = pair.target("ssd_postprocess", l, c, priors.to(l.dtype), st, it, k, m)
            o = pair.oracle("ssd_postprocess", l, c, priors.to(l.dtype), st, it, k, m)
            ok, detail = _compare_dets(t, o)
            ref = pair.label + ("; scores to 1e-6 (CUDA softmax)" if pair.gpu else "")
            res.add(item, detail, ref, ok)
        except Exception as exc:  # noqa: BLE001
            res.error(item, exc)


CHECKS: Sequence[Callable[[Results, Pair, Profile], None]] = (
    check_box_iou, check_nms, check_batched_nms, check_decode, check_match, check_postprocess)


def run(res: Results, profile: Profile) -> None:
    device = torch.device(profile.device)
    res.add("ops backend", ops.backend(), "native expected", ops.backend() == "native",
            native_error=ops.native_error())
    if ops.backend() != "native":
        return
    if device.type == "cuda" and not torch._C._dispatch_has_kernel_for_dispatch_key("mtlkit::nms", "CUDA"):
        res.add("CUDA kernels", "missing: mtlkit._C was built without them", "built", False)
        return
    pair = Pair(device)
    for check in CHECKS:
        check(res, pair, profile)
    failed = [r for r in res.rows if r["ok"] is False]
    res.add("ops_exact summary", f"{len(res.rows) - 1 - len(failed)} of {len(res.rows) - 1} cases identical",
            "every case", not failed)
