"""Synthetic rooms, statistically: over 1000 samples the scene types follow the
configured weights and the objects follow the scene recipes (slow)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mtlkit.data.synthetic import CLASSES, SCENES, generate_sample, make_options
from mtlkit.data.synthetic.generate import sample_rng
from mtlkit.data.synthetic.layout import sample_layout
from mtlkit.data.synthetic.scenes import RECIPES

N = 1000
WEIGHTS = (1.0, 2.0, 1.0, 1.0, 2.0, 3.0)


@pytest.fixture(scope="module")
def rendered():
    options = make_options((48, 64), scene_weights=WEIGHTS)
    samples = [generate_sample(0, "train", i, options) for i in range(N)]
    layouts = [sample_layout(sample_rng(0, "train", i), options.scene_probs()) for i in range(N)]
    return samples, layouts


@pytest.mark.slow
def test_scene_frequencies_follow_the_weights(rendered):
    samples, layouts = rendered
    scenes = np.array([int(s["scene"]) for s in samples])
    assert (scenes == np.array([lay.scene for lay in layouts])).all()
    observed = np.bincount(scenes, minlength=len(SCENES))
    expected = np.array(WEIGHTS) / sum(WEIGHTS) * N
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def _configured_presence(scene: str, cls: str) -> float:
    """P(at least one item of class ``cls`` is drawn) in a ``scene`` room."""
    absent = 1.0
    for item in RECIPES[scene].items:
        if item.cls == cls:
            absent *= 1.0 - item.p
    return 1.0 - absent


@pytest.mark.slow
def test_object_presence_follows_the_recipes(rendered):
    _, layouts = rendered
    for s, scene in enumerate(SCENES):
        rooms = [lay for lay in layouts if lay.scene == s]
        n = len(rooms)
        assert n > 50
        for cls in CLASSES:
            present = np.mean([any(CLASSES[o.cls] == cls for o in lay.objects) for lay in rooms])
            p = _configured_presence(scene, cls)
            tol = 4 * np.sqrt(max(p * (1 - p), 0.01) / n)
            if p == 0:
                assert present == 0, (scene, cls)
                continue
            # placement may fail (full room, no support), never add objects
            assert present <= p + tol, (scene, cls, present, p)
            floor_only = all(item.place != "on" for item in RECIPES[scene].items if item.cls == cls)
            if floor_only:
                assert present >= 0.8 * p - tol, (scene, cls, present, p)


@pytest.mark.slow
def test_rendered_labels_follow_co_occurrence(rendered):
    samples, _ = rendered
    counts = np.zeros((len(SCENES), len(CLASSES)), int)
    for s in samples:
        for label in s["labels"]:
            counts[int(s["scene"]), int(label) - 1] += 1
    for si, scene in enumerate(SCENES):
        configured = {item.cls for item in RECIPES[scene].items}
        for ci, cls in enumerate(CLASSES):
            if cls not in configured:
                assert counts[si, ci] == 0, (scene, cls)
    per_class = counts.sum(axis=0)
    assert (per_class >= 10).all(), dict(zip(CLASSES, per_class.tolist()))
    boxes_per_image = np.mean([len(s["labels"]) for s in samples])
    assert 2.0 <= boxes_per_image <= 15.0
