"""Metric accumulators: update / merge / compute / pickle, per-sample selection by ``has``."""

import math
import pickle

import pytest
import torch

from mtlkit.metrics import (
    DepthMetric,
    DetectionMetric,
    NormalsMetric,
    SceneMetric,
    coco_map,
    depth_metrics,
    normals_metrics,
    summary,
    to_coco_detections,
    to_coco_gt,
)
from _coco_sets import make_detection_set

H, W, C, S = 12, 16, 4, 3


def make_batches(seed=0, n_batches=4, batch_size=3):
    """Batches in the collated layout of docs/architecture.md, with the task's
    predictions; some samples lack some modalities."""
    g = torch.Generator().manual_seed(seed)
    out = []
    gt_coco, dets_coco = make_detection_set(seed=seed, n_images=n_batches * batch_size, n_classes=C,
                                            image_size=(H * 10, W * 10), dets_per_image=12)
    by_image = {im["id"]: ([], []) for im in gt_coco["images"]}
    for a in gt_coco["annotations"]:
        by_image[a["image_id"]][0].append(a)
    for d in dets_coco:
        by_image[d["image_id"]][1].append(d)
    ids = sorted(by_image)

    def xyxy(b):
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    for b in range(n_batches):
        batch_ids = ids[b * batch_size:(b + 1) * batch_size]
        has = {t: torch.rand(batch_size, generator=g) > 0.25 for t in ("detection", "depth", "normals", "scene")}
        depth = torch.rand(batch_size, 1, H, W, generator=g) * 5 + 0.5
        normals = torch.nn.functional.normalize(torch.randn(batch_size, 3, H, W, generator=g), dim=1)
        batch = {
            "image": torch.zeros(batch_size, 3, H * 10, W * 10),
            "boxes": [torch.tensor([xyxy(a["bbox"]) for a in by_image[i][0]]).reshape(-1, 4) for i in batch_ids],
            "labels": [torch.tensor([a["category_id"] for a in by_image[i][0]], dtype=torch.long) for i in batch_ids],
            "depth": depth,
            "depth_mask": torch.rand(batch_size, 1, H, W, generator=g) > 0.2,
            "normals": normals,
            "normals_mask": torch.rand(batch_size, 1, H, W, generator=g) > 0.2,
            "scene": torch.randint(0, S, (batch_size,), generator=g),
            "has": has,
            "meta": [{"id": i} for i in batch_ids],
        }
        preds = {
            "detection": [
                {"boxes": torch.tensor([xyxy(d["bbox"]) for d in by_image[i][1]]).reshape(-1, 4),
                 "scores": torch.tensor([d["score"] for d in by_image[i][1]]),
                 "labels": torch.tensor([d["category_id"] for d in by_image[i][1]], dtype=torch.long)}
                for i in batch_ids
            ],
            "depth": depth * torch.exp(0.2 * torch.randn(batch_size, 1, H, W, generator=g)),
            "normals": torch.nn.functional.normalize(normals + 0.4 * torch.randn(batch_size, 3, H, W, generator=g), dim=1),
            "scene": torch.softmax(torch.randn(batch_size, S, generator=g), dim=1),
        }
        out.append((batch, preds))
    return out


def new_metrics():
    return {"detection": DetectionMetric([f"c{i}" for i in range(1, C + 1)], task="detection"), "depth": DepthMetric(task="depth"),
            "normals": NormalsMetric(task="normals"), "scene": SceneMetric(task="scene")}


def run(batches):
    metrics = new_metrics()
    for batch, preds in batches:
        for name, m in metrics.items():
            m.update(preds[name], batch)
    return metrics


def assert_equal_results(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert a[k] == pytest.approx(b[k], abs=1e-9), k


def test_merge_of_two_halves_equals_the_whole():
    batches = make_batches()
    whole = run(batches)
    first, second = run(batches[:2]), run(batches[2:])
    for name in whole:
        merged = pickle.loads(pickle.dumps(first[name])).merge(pickle.loads(pickle.dumps(second[name])))
        assert_equal_results(merged.compute(), whole[name].compute())
    assert not math.isnan(whole["detection"].compute()["AP"])


def test_detection_metric_equals_coco_map_of_the_kept_samples():
    batches = make_batches(seed=1)
    metric = run(batches)["detection"]
    samples, preds, ids = [], [], []
    for batch, pred in batches:
        for i in range(len(batch["meta"])):
            if batch["has"]["detection"][i]:
                samples.append({"image": batch["image"][i], "boxes": batch["boxes"][i],
                                "labels": batch["labels"][i], "meta": batch["meta"][i]})
                preds.append(pred["detection"][i])
                ids.append(batch["meta"][i]["id"])
    assert 0 < len(ids) < sum(len(b["meta"]) for b, _ in batches)  # some samples are left out
    expected = coco_map(to_coco_gt(samples, [f"c{i}" for i in range(1, C + 1)]), to_coco_detections(preds, ids))
    got = metric.compute()
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert got[k] == pytest.approx(expected[k], abs=1e-9)
    for label, ap in expected["per_class"].items():
        assert got[f"AP/c{label}"] == pytest.approx(ap, abs=1e-9)
    assert metric.per_class() == {f"c{label}": pytest.approx(ap, abs=1e-9) for label, ap in expected["per_class"].items()}
    gt, dets = metric.to_coco()
    assert coco_map(gt, dets)["AP"] == pytest.approx(expected["AP"], abs=1e-9)


def test_detection_metric_counts_a_repeated_image_once():
    batches = make_batches(seed=2)
    once = run(batches)["detection"]
    twice = run(batches)["detection"].merge(run(batches[:1])["detection"])  # DistributedSampler padding
    assert_equal_results(once.compute(), twice.compute())


def test_dense_accumulators_equal_the_functions_on_kept_samples():
    batches = make_batches(seed=3)
    metrics = run(batches)
    keep = torch.cat([b["has"]["depth"] for b, _ in batches])
    pred = torch.cat([p["depth"] for _, p in batches])[keep]
    gt = torch.cat([b["depth"] for b, _ in batches])[keep]
    mask = torch.cat([b["depth_mask"] for b, _ in batches])[keep]
    assert_equal_results(metrics["depth"].compute(), depth_metrics(pred, gt, mask))

    keep = torch.cat([b["has"]["normals"] for b, _ in batches])
    args = [torch.cat([p["normals"] for _, p in batches])[keep], torch.cat([b["normals"] for b, _ in batches])[keep],
            torch.cat([b["normals_mask"] for b, _ in batches])[keep]]
    exact = normals_metrics(*args)
    got = metrics["normals"].compute()
    assert abs(got.pop("median") - exact.pop("median")) <= 0.005 + 1e-9
    assert_equal_results(got, exact)

    keep = torch.cat([b["has"]["scene"] for b, _ in batches])
    probs = torch.cat([p["scene"] for _, p in batches])[keep]
    labels = torch.cat([b["scene"] for b, _ in batches])[keep]
    assert metrics["scene"].compute()["top1"] == pytest.approx((probs.argmax(1) == labels).float().mean().item())


def test_samples_without_the_task_do_not_count():
    batch, preds = make_batches(seed=4, n_batches=1)[0]
    for name in ("depth", "normals", "scene", "detection"):
        batch["has"][name] = torch.zeros(3, dtype=torch.bool)
    metrics = new_metrics()
    for name, m in metrics.items():
        m.update(preds[name], batch)
        values = m.compute()
        assert values and all(math.isnan(v) for v in values.values()), name


def test_empty_accumulators_compute_nan():
    for name, m in new_metrics().items():
        values = m.compute()
        assert values and all(math.isnan(v) for v in values.values()), name
    assert {"AP", "AP50", "AP75", "AR100", "AP/c1"} <= set(new_metrics()["detection"].compute())
    assert {"abs_rel", "rmse", "delta1"} <= set(new_metrics()["depth"].compute())
    assert {"mean", "median", "within_11.25"} <= set(new_metrics()["normals"].compute())


def test_detection_metric_constructors():
    assert DetectionMetric(3).class_names == ["1", "2", "3"]
    assert DetectionMetric(num_classes=2, class_names=["a", "b"]).class_names == ["a", "b"]
    with pytest.raises(ValueError):
        DetectionMetric(num_classes=3, class_names=["a"])
    with pytest.raises(ValueError):
        DetectionMetric(2).merge(DetectionMetric(3))


def test_summary_table():
    results = {name: m.compute() for name, m in run(make_batches(seed=5)).items()}
    table = summary(results)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "metric", "value"]
    assert any(line.startswith("detection") and "AP" in line for line in lines)
    assert "AP/c1" not in table and "AP/c1" in summary(results, per_class=True)
    assert f"{results['depth']['abs_rel']:.4f}" in table
    assert len(lines) == 2 + sum(len([k for k in r if "/" not in k]) for r in results.values())
