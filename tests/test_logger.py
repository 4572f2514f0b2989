"""Run logging: metrics.jsonl always, TensorBoard events when the optional
package (``mtlkit[tensorboard]``, part of ``[dev]``) is installed, and a clear
flag when it is asked for but missing."""

import json
import sys

from mtlkit.engine.logger import RunLogger


def test_scalars_reach_metrics_jsonl_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(str(tmp_path), tensorboard=True)
    assert not logger.tensorboard_missing
    logger.log({"iter": 3, "event": "train", "loss": {"total": 1.5, "depth": 0.25}, "lr": 0.01,
                "note": "text is not a scalar", "flag": True})
    logger.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"iter": 3, "event": "train", "loss": {"total": 1.5, "depth": 0.25},
                        "lr": 0.01, "note": "text is not a scalar", "flag": True}]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/loss/depth", "train/loss/total", "train/lr"]
    (point,) = events.Scalars("train/loss/total")
    assert point.step == 3 and point.value == 1.5


def test_tensorboard_asked_for_but_not_installed_is_flagged_not_hidden(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    logger = RunLogger(str(tmp_path), tensorboard=True)
    assert logger.tensorboard_missing
    logger.log({"iter": 1, "loss": 2.0})
    logger.close()
    assert not (tmp_path / "tb").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"iter": 1, "loss": 2.0}
    off = RunLogger(str(tmp_path / "off"), enabled=False, tensorboard=True)
    assert not off.tensorboard_missing  # not asked on a non-main rank: nothing to say
