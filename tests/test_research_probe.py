"""The class-evidence probe (mtlkit.research.probe) trains on the engine's
trainer: crops of every box, deterministic accuracies per seed, its command line."""

import json

import pytest

from mtlkit.data.synthetic.cli import write_set
from mtlkit.data.synthetic.generate import make_options
from mtlkit.research import probe


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    train, test = str(root / "train"), str(root / "test")
    write_set(train, 6, 5, "train", make_options((64, 96)), progress=False, preview=False)
    write_set(test, 3, 5, "val", make_options((64, 96)), progress=False, preview=False)
    return train, test


def test_crops_cover_every_box(sets):
    from mtlkit.data.synthetic import SyntheticRooms

    data = probe.crops(sets[0], size=16)
    boxes = sum(len(SyntheticRooms(root=sets[0]).arrays(i)["boxes"]) for i in range(6))
    assert data["rgb"].shape == (boxes, 3, 16, 16) and data["geometry"].shape == (boxes, 4, 16, 16)
    assert data["labels"].min() >= 0


def test_probe_is_deterministic_and_trains(sets):
    train, test = probe.crops(sets[0], size=16), probe.crops(sets[1], size=16)
    first = probe.probe(train, test, "all", iters=12, batch=8, seed=0)
    assert first == probe.probe(train, test, "all", iters=12, batch=8, seed=0)
    assert all(0.0 <= a <= 1.0 for a in first)
    untrained = probe.probe(train, test, "all", iters=0, batch=8, seed=0)
    assert first[0] > untrained[0]  # 12 steps fit the training crops better than none


def test_probe_command_line(sets, capsys):
    assert probe.main(["--train", sets[0], "--test", sets[1], "--iters", "4", "--inputs", "rgb"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"rgb"} and len(out["rgb"]["test_accuracy"]) == 1
