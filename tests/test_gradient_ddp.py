"""DDP (gloo, 2 processes) with a gradient-level weighting takes the step one
process takes on the same global batch, for every method at both places,
FAMO and RLW, ``fixed``, and with gradient accumulation (docs/weighting.md §5).

The model (tests/_gradient_fakes.py) has no BatchNorm and normalises its
masked losses by the batch size, and its labels are missing on a fixed
pattern of samples, so in some steps a task is labelled on one process and
not on the other: presence is decided over both processes.
"""

import copy
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from _gradient_fakes import GRAD_CFG, grad_parts
from plugins.gradient_weightings import GRADIENT_WEIGHTINGS

ITERS = 5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cases():
    """(label, weighting name, options, accumulate)."""
    out = [("fixed", "fixed", {}, 1)]
    for name, cls in GRADIENT_WEIGHTINGS.items():
        seed = {"seed": 0} if cls.randomised else {}
        places = ("representation", "parameters") if cls.needs_gradients else (None,)
        for place in places:
            options = {**seed, **({"place": place} if place else {})}
            out.append((f"{name}-{place or 'loss'}", name, options, 1))
    out += [("gcs-representation-acc2", "gcs", {}, 2), ("pcgrad-parameters-acc2", "pcgrad",
                                                        {"place": "parameters", "seed": 0}, 2),
            ("famo-loss-acc2", "famo", {}, 2), ("mgda-representation-acc2", "mgda", {}, 2)]
    return out


def config(batch_size, accumulate):
    cfg = copy.deepcopy(GRAD_CFG)
    cfg["train"].update(iters=ITERS, accumulate=accumulate)
    cfg["data"]["batch_size"] = batch_size
    return cfg


def _worker(rank, world, port, root):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from mtlkit.engine import train

    try:
        for label, name, options, accumulate in cases():
            # 2 processes x (4 / (2 accumulate)) images per micro-batch: 4 images per step
            train(config(4 // (2 * accumulate) if accumulate > 1 else 2, accumulate),
                  os.path.join(root, "two", label), **grad_parts(name, **options))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_take_the_step_of_one_for_every_method(tmp_path):
    from mtlkit.engine import train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for label, name, options, _ in cases():
            train(config(4, 1), str(tmp_path / "one" / label), **grad_parts(name, **options))
    finally:
        torch.set_num_threads(n)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)

    report = {}
    for label, name, _, accumulate in cases():
        a = torch.load(tmp_path / "one" / label / "last.pt", weights_only=True)
        b = torch.load(tmp_path / "two" / label / "last.pt", weights_only=True)
        assert b["data"]["world_size"] == 2 and a["iteration"] == b["iteration"] == ITERS
        worst = 0.0
        for key, value in a["model"].items():
            other = b["model"][key]
            if value.is_floating_point():
                torch.testing.assert_close(value, other, rtol=1e-5, atol=1e-6, msg=f"{label}: {key}")
                worst = max(worst, float((value - other).abs().max()))
            else:
                assert torch.equal(value, other), f"{label}: {key}"
        # the methods' coefficients, step by step, on rank 0 and in the single process
        records = [[json.loads(line) for line in open(tmp_path / side / label / "metrics.jsonl")]
                   for side in ("one", "two")]
        coefficients = [[r["weights"] for r in rs if r["event"] == "weighting"] for rs in records]
        for one, two in zip(*coefficients):
            for task in one:
                assert two[task] == pytest.approx(one[task], rel=1e-4, abs=1e-6), (label, task)
        assert len(coefficients[0]) == len(coefficients[1]) == (ITERS if name != "fixed" else 0)
        report[label] = worst
    print("\nlargest |1 process - 2 processes| weight difference after", ITERS, "steps:")
    for label, worst in report.items():
        print(f"  {label:32s} {worst:.2e}")
