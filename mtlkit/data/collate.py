"""Stacking samples into a batch (docs/architecture.md, "Samples and batches").

A sample is a dict (``image`` (3,H,W), ``boxes`` (N,4), ``labels`` (N,),
``scene`` (), ``depth``/``depth_mask`` (1,H,W), ``normals`` (3,H,W),
``normals_mask`` (1,H,W), ``has`` dict task -> bool, ``meta`` dict). The batch
has the same keys: tensors stacked along a new first dim, ``boxes``/``labels``
as lists, ``has`` as dict task -> (B,) bool tensor, ``meta`` as a list.

A tensor key present in some samples but not others (a modality the other
samples lack, e.g. depth in a real + synthetic mix) is filled with zeros of
the same shape and dtype for the samples without it; their ``has`` entry for
the task is ``False`` unless the sample says otherwise. Keys are handled
generically, so a plugin task's own keys are batched the same way.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch

from mtlkit.errors import DataError

LIST_KEYS = ("boxes", "labels")
SPECIAL_KEYS = ("has", "meta") + LIST_KEYS


def collate(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack a list of samples into a batch dict (see module docstring)."""
    if len(samples) == 0:
        raise ValueError("collate needs at least one sample")
    batch: Dict[str, Any] = {}
    sizes = {tuple(s["image"].shape) for s in samples if "image" in s}
    if len(sizes) > 1:
        raise DataError(
            f"samples of a batch have different image sizes {sorted(sizes)}; set data.image_size "
            "so that every sample is resized to the same (H, W)"
        )

    keys: List[str] = []
    for sample in samples:
        for key in sample:
            if key not in SPECIAL_KEYS and key not in keys:
                keys.append(key)
    for key in keys:
        ref = next(s[key] for s in samples if key in s)
        if not isinstance(ref, torch.Tensor):
            batch[key] = [s.get(key) for s in samples]
            continue
        values = []
        for sample in samples:
            value = sample.get(key)
            if value is None:
                value = torch.zeros_like(ref)
            elif value.shape != ref.shape:
                raise DataError(
                    f"samples of a batch disagree on the shape of '{key}': "
                    f"{tuple(ref.shape)} vs {tuple(value.shape)}"
                )
            values.append(value)
        batch[key] = torch.stack(values)

    batch["boxes"] = [
        s["boxes"] if "boxes" in s else torch.zeros((0, 4), dtype=torch.float32) for s in samples
    ]
    batch["labels"] = [
        s["labels"] if "labels" in s else torch.zeros((0,), dtype=torch.int64) for s in samples
    ]
    tasks: List[str] = []
    for sample in samples:
        for task in sample.get("has", {}):
            if task not in tasks:
                tasks.append(task)
    batch["has"] = {
        task: torch.tensor([bool(s.get("has", {}).get(task, False)) for s in samples], dtype=torch.bool)
        for task in tasks
    }
    batch["meta"] = [s.get("meta", {}) for s in samples]
    return batch
