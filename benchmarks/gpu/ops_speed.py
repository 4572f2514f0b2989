"""Stage ``ops_speed``: mtlkit's ``nms``, ``batched_nms``, ``box_iou``,
``ssd_match``, ``ssd_decode`` and ``ssd_postprocess`` against torchvision's ops
on the same device and inputs (where torchvision imports), else against
batched plain-torch pipelines (:mod:`baselines`, the reference ops).

Each row: mtlkit's median time, the baseline's, the ratio baseline / mtlkit
(> 1: mtlkit is faster; the issue's acceptance: no op slower than
torchvision's CUDA op) and whether both give the same result (inputs without
tied scores, so torchvision's unstable sort cannot reorder them).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mtlkit.ops as ops  # noqa: E402
from _ops_data import random_gt, random_head  # noqa: E402
from baselines import batched_match, per_image_postprocess, same_detections, torchvision_ops  # noqa: E402
from common import Results, fmt_seconds, time_calls  # noqa: E402
from ops_exact import _paper_priors  # noqa: E402
from profiles import Profile  # noqa: E402


def distinct_boxes(n: int, seed: int, device: torch.device):
    """n boxes with corners in [0, 1000] and sides in [1, 100]; scores a
    permutation of distinct values (no ties)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 99 + 1
    scores = (torch.randperm(n, generator=g).float() + 0.5) / max(n, 1)
    return torch.cat([xy, xy + wh], 1).to(device), scores.to(device)


def _row(res: Results, item: str, ours: dict, base: dict, base_name: str, same, gate: bool) -> None:
    """One comparison; ``gate``: the ratio is a pass mark (a torchvision CUDA op,
    the issue's acceptance: mtlkit no slower)."""
    ratio = base["median"] / ours["median"] if ours["median"] > 0 else float("inf")
    res.add(item, f"{fmt_seconds(ours['median'])} vs {fmt_seconds(base['median'])}: {ratio:.2f}x",
            f"{base_name}; same result: {same}", ok=(ratio >= 1.0) if gate else None,
            mtlkit_s=ours["median"], baseline_s=base["median"], ratio=ratio, same=same)


def run(res: Results, profile: Profile) -> None:
    device = torch.device(profile.device)
    tv = torchvision_ops()
    native = ops.backend() == "native" and (
        device.type != "cuda" or torch._C._dispatch_has_kernel_for_dispatch_key("mtlkit::nms", "CUDA"))
    res.add("baseline", "torchvision " + __import__("torchvision").__version__ if tv else
            "batched plain torch (torchvision not importable)", "", None, torchvision=bool(tv))
    if not native:
        res.add("mtlkit native ops", "unavailable: speed not measured", "native", False)
        return
    reps, warm = profile.speed_reps, 2
    gate = bool(tv) and device.type == "cuda"

    for n in profile.speed_sizes:
        boxes, scores = distinct_boxes(n, n, device)
        ours = lambda: ops.nms(boxes, scores, 0.5)  # noqa: E731
        base = (lambda: tv.nms(boxes, scores, 0.5)) if tv else (lambda: ops.nms(boxes, scores, 0.5, backend="torch"))
        name = "torchvision.ops.nms" if tv else "reference nms (torch)"
        try:
            if not tv and n > 20000:
                res.add(f"nms n={n}", "skipped: the plain-torch reference is quadratic in Python", name)
                continue
            same = bool(torch.equal(ours().cpu(), base().cpu()))
            _row(res, f"nms n={n}", time_calls(ours, device, warm, reps), time_calls(base, device, warm, reps),
                 name, same, gate)
        except Exception as exc:  # noqa: BLE001
            res.error(f"nms n={n}", exc)

    try:
        n = 5000
        boxes, scores = distinct_boxes(n, 7, device)
        idxs = torch.randint(0, 20, (n,), generator=torch.Generator().manual_seed(7)).to(device)
        ours = lambda: ops.batched_nms(boxes, scores, idxs, 0.5)  # noqa: E731
        base = (lambda: tv.batched_nms(boxes, scores, idxs, 0.5)) if tv else \
            (lambda: ops.batched_nms(boxes, scores, idxs, 0.5, backend="torch"))
        same = bool(torch.equal(ours().cpu(), base().cpu()))
        _row(res, "batched_nms n=5000, 20 groups", time_calls(ours, device, warm, reps),
             time_calls(base, device, warm, reps),
             "torchvision.ops.batched_nms" if tv else "reference batched_nms (torch)", same, gate)
    except Exception as exc:  # noqa: BLE001
        res.error("batched_nms n=5000, 20 groups", exc)

    priors = _paper_priors().to(device)
    try:
        a, _ = distinct_boxes(1000, 8, device)
        b = ops.cxcywh_to_xyxy(priors) * 1000
        ours = lambda: ops.box_iou(a, b)  # noqa: E731
        base = (lambda: tv.box_iou(a, b)) if tv else (lambda: ops.box_iou(a, b, backend="torch"))
        same = bool(torch.allclose(ours(), base(), atol=1e-6))
        _row(res, f"box_iou 1000x{priors.shape[0]}", time_calls(ours, device, warm, reps),
             time_calls(base, device, warm, reps), "torchvision.ops.box_iou" if tv else "reference box_iou", same, gate)
    except Exception as exc:  # noqa: BLE001
        res.error("box_iou", exc)

    try:
        B = profile.match_batch
        gt, labels = random_gt(B, seed=9, max_objects=20)
        gt, labels = [g.to(device) for g in gt], [l.to(device) for l in labels]
        ours = lambda: ops.ssd_match(gt, labels, priors, 0.5)  # noqa: E731
        base = lambda: batched_match(gt, labels, priors, 0.5)  # noqa: E731
        (ol, olab), (bl, blab) = ours(), base()
        same = bool(torch.equal(olab, blab) and torch.allclose(ol, bl, atol=1e-5, rtol=1e-5))
        _row(res, f"ssd_match B={B}, P={priors.shape[0]}", time_calls(ours, device, warm, reps),
             time_calls(base, device, warm, reps), "batched torch matching (torchvision has none)", same, False)
    except Exception as exc:  # noqa: BLE001
        res.error("ssd_match", exc)

    B = profile.post_batch
    loc, conf = random_head(B, priors.cpu(), classes=20, seed=10)
    loc, conf = loc.to(device), conf.to(device)
    try:
        ours = lambda: ops.ssd_decode(loc, priors)  # noqa: E731
        base = lambda: ops.ssd_decode(loc, priors, backend="torch")  # noqa: E731
        same = bool(torch.allclose(ours(), base(), atol=1e-6))
        _row(res, f"ssd_decode B={B}, P={priors.shape[0]}", time_calls(ours, device, warm, reps),
             time_calls(base, device, warm, reps), "batched torch decode (reference)", same, False)
    except Exception as exc:  # noqa: BLE001
        res.error("ssd_decode", exc)

    try:
        args = (0.01, 0.45, 200, 100)
        ours = lambda: ops.ssd_postprocess(loc, conf, priors, *args)  # noqa: E731
        if tv:
            base = lambda: per_image_postprocess(loc, conf, priors, *args, nms=tv.batched_nms,  # noqa: E731
                                                 decode=lambda l, p: ops.ssd_decode(l, p, backend="torch"))
            name = "per-image torchvision pipeline (topk + torchvision batched_nms)"
            same = same_detections(ours(), base())
        else:
            base = lambda: ops.ssd_postprocess(loc, conf, priors, *args, backend="torch")  # noqa: E731
            name = "reference ssd_postprocess (torch)"
            same = all(bool(torch.equal(x.labels.cpu(), y.labels.cpu())) for x, y in zip(ours(), base()))
        _row(res, f"ssd_postprocess B={B}, P={priors.shape[0]}, 20 classes",
             time_calls(ours, device, warm, max(3, reps // 2)), time_calls(base, device, warm, max(3, reps // 2)),
             name, same, gate)
    except Exception as exc:  # noqa: BLE001
        res.error("ssd_postprocess", exc)
