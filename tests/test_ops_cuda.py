"""CUDA kernels of mtlkit.ops: identical results to the CPU kernels (float32), on a GPU."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import mtlkit.ops as ops

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(ops.backend() != "native", reason="native extension not active"),
]


def _has_cuda_kernels():
    return torch._C._dispatch_has_kernel_for_dispatch_key("mtlkit::nms", "CUDA")


@pytest.fixture(autouse=True)
def _cuda_kernels():
    if not _has_cuda_kernels():
        pytest.skip("mtlkit._C built without CUDA kernels")


def rand_boxes(n, seed, extent=1000.0, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000, 20000])
def test_nms_cuda_equals_cpu(n):
    boxes, scores = rand_boxes(n, n)
    scores[::3] = 0.5  # ties
    for thr in (0.3, 0.5, 0.7):
        cpu = ops.nms(boxes, scores, thr)
        gpu = ops.nms(boxes.cuda(), scores.cuda(), thr)
        assert gpu.device.type == "cuda"
        assert torch.equal(cpu, gpu.cpu())


def test_batched_nms_cuda_equals_cpu():
    boxes, scores = rand_boxes(5000, 1, extent=300)
    idxs = torch.randint(0, 7, (5000,), generator=torch.Generator().manual_seed(1))
    cpu = ops.batched_nms(boxes, scores, idxs, 0.5)
    gpu = ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5)
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_and_decode_cuda_equal_cpu(dtype):
    import _ops_data

    a, _ = rand_boxes(300, 2)
    b, _ = rand_boxes(500, 3)
    a, b = a.to(dtype), b.to(dtype)
    assert torch.equal(ops.box_iou(a, b), ops.box_iou(a.cuda(), b.cuda()).cpu())
    priors = _ops_data.ssd300_priors().to(dtype)
    loc, _ = _ops_data.random_head(4, priors)
    loc = loc.to(dtype)
    torch.testing.assert_close(ops.ssd_decode(loc, priors), ops.ssd_decode(loc.cuda(), priors.cuda()).cpu(),
                               rtol=0, atol=0 if dtype == torch.float32 else 1e-15)


def test_ssd_match_cuda_equals_cpu():
    import _ops_data

    priors = _ops_data.ssd300_priors()
    gt, labels = _ops_data.random_gt(32, seed=3, max_objects=20)
    gt[5], labels[5] = gt[5][:0], labels[5][:0]  # an image without GT
    cpu = ops.ssd_match(gt, labels, priors)
    gpu = ops.ssd_match([g.cuda() for g in gt], [l.cuda() for l in labels], priors.cuda())
    assert torch.equal(cpu[1], gpu[1].cpu())
    assert torch.equal(cpu[0], gpu[0].cpu())


@pytest.mark.parametrize("top_k,max_det", [(200, 200), (5, 20), (-1, -1)])
def test_ssd_postprocess_cuda_equals_cpu(top_k, max_det):
    import _ops_data

    priors = _ops_data.ssd300_priors()
    loc, conf = _ops_data.random_head(4, priors, seed=7)
    cpu = ops.ssd_postprocess(loc, conf, priors, 0.01, 0.45, top_k, max_det)
    gpu = ops.ssd_postprocess(loc.cuda(), conf.cuda(), priors.cuda(), 0.01, 0.45, top_k, max_det)
    # CUDA's softmax may round differently from the CPU's (last ulp): scores are
    # compared with a tolerance; with these inputs no decision sits that close.
    for x, y in zip(cpu, gpu):
        assert torch.equal(x.labels, y.labels.cpu())
        torch.testing.assert_close(x.scores, y.scores.cpu(), rtol=1e-6, atol=1e-7)
        assert torch.equal(x.boxes, y.boxes.cpu())


def test_ssd_postprocess_cuda_is_deterministic():
    import _ops_data

    priors = _ops_data.ssd300_priors().cuda()
    loc, conf = _ops_data.random_head(8, priors.cpu(), seed=8)
    loc, conf = loc.cuda(), conf.round().cuda()  # many equal scores
    a = ops.ssd_postprocess(loc, conf, priors, 0.01, 0.45, 200, 100)
    b = ops.ssd_postprocess(loc, conf, priors, 0.01, 0.45, 200, 100)
    for x, y in zip(a, b):
        assert torch.equal(x.labels, y.labels) and torch.equal(x.scores, y.scores) and torch.equal(x.boxes, y.boxes)
