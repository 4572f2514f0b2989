"""Random COCO detection sets (ground truth + detections) for tests and benchmarks.

Deterministic per seed. The detections look like a detector's output: noisy copies
of GT boxes (some with the wrong class), plus false positives, with scores that
favour the good ones; options add the awkward cases an evaluator must get right.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np


def make_detection_set(
    seed: int = 0,
    n_images: int = 50,
    n_classes: int = 5,
    gt_per_image: Tuple[int, int] = (0, 8),
    dets_per_image: int = 30,
    image_size: Tuple[int, int] = (480, 640),
    crowd_fraction: float = 0.05,
    tie_scores: bool = False,
    extra_categories: int = 0,
    unknown_category_dets: int = 0,
    images_without_dets: int = 0,
) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Return ``(gt, detections)`` in COCO format.

    Args:
        seed: random seed.
        n_images: number of images (ids 1..n_images, listed in shuffled order).
        n_classes: categories 1..n_classes (some may end up without GT).
        gt_per_image: inclusive range of GT boxes per image (0 gives images without GT).
        dets_per_image: about this many detections per image (true-ish + false positives);
            may exceed 100 to exercise the maxDets cut.
        image_size: (H, W); boxes span all three COCO area ranges.
        crowd_fraction: share of GT marked ``iscrowd``.
        tie_scores: round scores to 2 decimals so many are equal.
        extra_categories: categories listed in ``gt`` with no annotation at all.
        unknown_category_dets: detections whose category is not in ``gt`` (dropped by COCO).
        images_without_dets: the last this many images get no detection.
    """
    rng = np.random.default_rng(seed)
    H, W = image_size
    images, anns, dets = [], [], []
    image_ids = rng.permutation(n_images) + 1

    def random_boxes(k: int) -> np.ndarray:
        # log-uniform sizes from ~4 px to ~half the image: small, medium and large boxes
        w = np.exp(rng.uniform(np.log(4), np.log(W / 1.5), k))
        h = np.clip(w * np.exp(rng.normal(0, 0.4, k)), 2, H - 1)
        x = rng.uniform(0, W - w)
        y = rng.uniform(0, np.maximum(H - h, 1))
        return np.stack([x, y, w, h], axis=1)

    for n, image_id in enumerate(image_ids):
        image_id = int(image_id)
        images.append({"id": image_id, "height": H, "width": W})
        k = int(rng.integers(gt_per_image[0], gt_per_image[1] + 1))
        boxes = random_boxes(k)
        labels = rng.integers(1, n_classes + 1, k)
        crowd = rng.random(k) < crowd_fraction
        for b, c, cr in zip(boxes, labels, crowd):
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": int(c),
                "bbox": [float(v) for v in b], "area": float(b[2] * b[3] * rng.uniform(0.6, 1.0)),
                "iscrowd": int(cr),
            })
        if n >= n_images - images_without_dets:
            continue
        # noisy copies of GT boxes
        n_true = min(dets_per_image, 3 * k)
        src = rng.integers(0, max(k, 1), n_true) if k else np.zeros(0, dtype=int)
        jit = boxes[src].copy() if k else np.zeros((0, 4))
        scale = rng.uniform(0.0, 0.35, (len(src), 1))
        jit[:, :2] += rng.normal(0, 1, (len(src), 2)) * scale * jit[:, 2:]
        jit[:, 2:] *= np.exp(rng.normal(0, 1, (len(src), 2)) * scale)
        lab = labels[src] if k else np.zeros(0, dtype=int)
        wrong = rng.random(len(src)) < 0.15
        lab = np.where(wrong, rng.integers(1, n_classes + 1, len(src)), lab)
        sc_true = np.clip(rng.beta(4, 2, len(src)) - scale[:, 0], 0.001, 1)
        # false positives
        n_fp = max(dets_per_image - len(src), 0)
        fp = random_boxes(n_fp)
        fp_lab = rng.integers(1, n_classes + 1, n_fp)
        sc_fp = rng.beta(1.5, 5, n_fp)
        all_boxes = np.concatenate([jit, fp])
        all_lab = np.concatenate([lab, fp_lab])
        all_sc = np.concatenate([sc_true, sc_fp])
        if tie_scores:
            all_sc = np.round(all_sc, 2)
        perm = rng.permutation(len(all_sc))
        for i in perm:
            b = all_boxes[i]
            dets.append({
                "image_id": image_id, "category_id": int(all_lab[i]),
                "bbox": [float(v) for v in b], "score": float(all_sc[i]),
            })
    # a few exact duplicates of GT boxes (IoU exactly 1) and of detections (tied IoUs)
    for ann in anns[: max(1, len(anns) // 20)]:
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": list(ann["bbox"]), "score": 0.5})
    for _ in range(unknown_category_dets):
        dets.append({"image_id": int(image_ids[int(rng.integers(n_images))]),
                     "category_id": n_classes + extra_categories + 7,
                     "bbox": [float(v) for v in random_boxes(1)[0]], "score": float(rng.random())})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + extra_categories + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, dets
