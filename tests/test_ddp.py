"""Multi-process training (DDP, gloo on CPU) equals one process with the same
global batch.

The fake model has no BatchNorm: with batch statistics, 2 processes x 2
images normalise over 2 images where 1 process x 4 normalises over 4, so the
runs differ by design (use ``train.sync_bn`` or frozen BN for that case).
"""

import copy
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from _engine_fakes import ENGINE_CFG, fake_parts, final_weights


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out, cfg):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from mtlkit.engine import train

    train(cfg, out, **fake_parts(n_train=32, n_val=11))


@pytest.mark.slow
def test_two_processes_equal_one_with_same_global_batch(tmp_path):
    cfg = copy.deepcopy(ENGINE_CFG)
    cfg["train"].update(iters=6, eval_every=3, checkpoint_every=3)
    one = copy.deepcopy(cfg)
    one["data"]["batch_size"] = 4
    two = copy.deepcopy(cfg)
    two["data"]["batch_size"] = 2

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from mtlkit.engine import train

        single = train(one, tmp_path / "one", **fake_parts(n_train=32, n_val=11))
    finally:
        torch.set_num_threads(n)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "two"), two), nprocs=2, join=True)

    a, ckpt_a = final_weights(tmp_path / "one")
    b, ckpt_b = final_weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert ckpt_b["data"]["world_size"] == 2 and ckpt_b["data"]["batch_size"] == 2
    assert len(ckpt_b["rng"]) == 2  # one RNG state per rank
    # evaluation is sharded then merged: every validation sample counted once
    merged = json.load(open(tmp_path / "two" / "metrics.json"))["metrics"]
    assert merged["reg"]["count"] == 11
    assert merged["reg"]["mse"] == pytest.approx(single["reg"]["mse"], rel=1e-4)
    # only rank 0 wrote the log: each iteration once
    iters = [json.loads(line)["iter"] for line in open(tmp_path / "two" / "metrics.jsonl")
             if json.loads(line)["event"] == "train"]
    assert iters == list(range(1, 7))


def _pretrain_worker(rank, world, port, data, out, run_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from mtlkit.commands.pretrain import pretrain

    pretrain(data, out, run_dir=run_dir, iters=3, batch_size=2, crops_per_batch=2, image_size=[48, 64],
             crop_size=32)


@pytest.mark.slow
def test_pretrain_trains_on_two_processes(tmp_path):
    """`mtlkit pretrain` is a trainer run, so DDP (gloo) holds for it too: the
    global batch is sharded, every rank's RNG is checkpointed, rank 0 writes."""
    from mtlkit.data.synthetic.cli import write_set
    from mtlkit.data.synthetic.generate import make_options

    data = str(tmp_path / "set")
    write_set(data, 8, 3, "train", make_options((48, 64)), progress=False, preview=False)
    out, run_dir = str(tmp_path / "w.pt"), str(tmp_path / "run")
    mp.spawn(_pretrain_worker, args=(2, free_port(), data, out, run_dir), nprocs=2, join=True)
    ckpt = torch.load(os.path.join(run_dir, "last.pt"), weights_only=True)
    assert ckpt["iteration"] == 3 and ckpt["data"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    # 3 global batches of 2 x 2 images, 2 per epoch of 8 images
    assert (ckpt["data"]["epoch"], ckpt["data"]["batch"]) == (1, 1)
    weights = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    iters = [json.loads(line)["iter"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert iters == [3]  # one record (log_every 50, and the last iteration), written once
