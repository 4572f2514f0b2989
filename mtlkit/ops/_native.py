"""Python-side registrations for the native ops: fake (meta) kernels for torch.compile.

The C++ side (``csrc/``) defines the schemas, the CPU / CUDA kernels and an
autocast rule (half / bfloat16 inputs run in float32).
"""

from __future__ import annotations

import torch

_registered = False


def register_python_kernels() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    lib = "mtlkit::"

    def _float(t: torch.Tensor) -> torch.dtype:
        return torch.float64 if t.dtype == torch.float64 else torch.float32

    @torch.library.register_fake(lib + "box_iou")
    def _box_iou_fake(a, b):
        return a.new_empty((a.shape[0], b.shape[0]), dtype=_float(a))

    @torch.library.register_fake(lib + "nms")
    def _nms_fake(boxes, scores, iou_threshold):
        ctx = torch.library.get_ctx()
        k = ctx.new_dynamic_size()
        return boxes.new_empty((k,), dtype=torch.int64)

    @torch.library.register_fake(lib + "batched_nms")
    def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
        ctx = torch.library.get_ctx()
        k = ctx.new_dynamic_size()
        return boxes.new_empty((k,), dtype=torch.int64)

    @torch.library.register_fake(lib + "ssd_match")
    def _ssd_match_fake(gt_boxes, gt_labels, gt_offsets, priors, iou_threshold, v0, v1):
        b = gt_offsets.shape[0] - 1
        p = priors.shape[0]
        return (
            priors.new_empty((b, p, 4), dtype=_float(priors)),
            priors.new_empty((b, p), dtype=torch.int64),
        )

    @torch.library.register_fake(lib + "ssd_decode")
    def _ssd_decode_fake(loc, priors, v0, v1):
        return loc.new_empty(loc.shape, dtype=_float(loc))

    @torch.library.register_fake(lib + "ssd_postprocess")
    def _ssd_postprocess_fake(loc, conf, priors, score_threshold, iou_threshold, top_k, max_detections, v0, v1):
        ctx = torch.library.get_ctx()
        k = ctx.new_dynamic_size()
        dt = _float(conf)
        return (
            loc.new_empty((k, 4), dtype=dt),
            conf.new_empty((k,), dtype=dt),
            conf.new_empty((k,), dtype=torch.int64),
            conf.new_empty((loc.shape[0],), dtype=torch.int64),
        )
