"""Checkpoints: weights_only loading, RNG round trip, atomicity, and a run
killed with SIGKILL then resumed ending bit-identical to an uninterrupted run."""

import copy
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mtlkit.engine.checkpoint import (load_checkpoint, model_state, rng_state, save_checkpoint,
                                      set_rng_state, strip_ddp_prefix)
from mtlkit.engine.data import ShardedBatches, TrainStream, epoch_permutation
from mtlkit.errors import DataError
from _engine_fakes import ENGINE_CFG, FakeDataset, fake_parts, final_weights

HERE = os.path.dirname(os.path.abspath(__file__))


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # a cached gauss in numpy's state
    state = rng_state()
    save_checkpoint({"model": {}, "rng": state}, str(tmp_path / "c.pt"))
    expected = (random.random(), np.random.normal(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(str(tmp_path / "c.pt"))["rng"])
    got = (random.random(), np.random.normal(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_load_errors_and_helpers(tmp_path):
    with pytest.raises(DataError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "none.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read checkpoint"):
        load_checkpoint(str(tmp_path / "junk.pt"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not an mtlkit checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))
    w = {"a": torch.ones(1)}
    assert model_state({"model": w, "ema": None}) == w
    assert model_state({"model": {}, "ema": {"weights": w}}) == w
    assert model_state({"model": {}, "ema": {"weights": w}}, use_ema=False) == {}
    assert list(strip_ddp_prefix({"module.x": 1, "y": 2})) == ["x", "y"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = str(tmp_path / "last.pt")
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint({"model": {}, "x": Unpicklable()}, path)
    assert load_checkpoint(path)["iteration"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_sharded_batches_partition_the_global_batch():
    one = ShardedBatches(20, 4, world_size=1, rank=0, seed=5)
    r0 = ShardedBatches(20, 2, world_size=2, rank=0, seed=5)
    r1 = ShardedBatches(20, 2, world_size=2, rank=1, seed=5)
    assert one.batches_per_epoch == r0.batches_per_epoch == 5
    for epoch in (0, 1):
        for g, a, b in zip(one.epoch_batches(epoch), r0.epoch_batches(epoch), r1.epoch_batches(epoch)):
            assert g == a + b
    assert one.epoch_batches(0) != one.epoch_batches(1)  # reshuffled per epoch
    assert one.epoch_batches(3, start=2) == one.epoch_batches(3)[2:]
    assert sorted(epoch_permutation(20, 5, 0).tolist()) == list(range(20))
    assert np.array_equal(epoch_permutation(20, 5, 7), epoch_permutation(20, 5, 7))
    with pytest.raises(DataError, match="fewer than one global batch"):
        ShardedBatches(3, 2, world_size=2)


def test_train_stream_resumes_at_its_position():
    from mtlkit.data import collate

    ds = FakeDataset(12, seed=0)
    sampler = ShardedBatches(12, 5, seed=1)  # 2 batches per epoch, 2 samples dropped
    full = TrainStream(ds, sampler, collate)
    seen = [full.next() for _ in range(5)]
    ids = [[m["id"] for m in b["meta"]] for b in seen]
    assert full.state() == {"epoch": 2, "batch": 1}
    resumed = TrainStream(FakeDataset(12, seed=0), sampler, collate, epoch=1, batch=1)
    rest = [resumed.next() for _ in range(2)]
    assert [[m["id"] for m in b["meta"]] for b in rest] == ids[3:5]
    # augmentation depends on the epoch: same position -> same pixels
    assert torch.equal(rest[0]["image"], seen[3]["image"])


def _wait_for(path, timeout, proc):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_exact(tmp_path):
    iters, every = 40, 5
    out = str(tmp_path / "killed")
    script = os.path.join(HERE, "_engine_fakes.py")
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, script, out, str(iters), str(every), "0.01"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait_for(os.path.join(out, "last.pt"), 120, proc), proc.communicate()
        time.sleep(0.3)  # kill somewhere in the middle of later iterations
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = torch.load(os.path.join(out, "last.pt"), weights_only=True)["iteration"]
    assert 0 < at_kill < iters

    done = subprocess.run([sys.executable, script, out, str(iters), str(every), "0", "--resume"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed from {out}" in done.stderr

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from mtlkit.engine import train

        cfg = copy.deepcopy(ENGINE_CFG)
        cfg["train"].update(iters=iters, checkpoint_every=every)
        train(cfg, tmp_path / "straight", **fake_parts(dropout=0.2))
    finally:
        torch.set_num_threads(n)
    a, b = final_weights(tmp_path / "straight")[0], final_weights(out)[0]
    for k in a:
        assert torch.equal(a[k], b[k]), k
