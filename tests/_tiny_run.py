"""A one-iteration training run on a few synthetic rooms, for the tests of the
commands that need a trained run folder (eval, detect, resume)."""

import os

from mtlkit.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
SSD = os.path.join(ROOT, "configs", "synthetic", "ssd.yaml")
#: a config on top of ``base`` (a config path): 4 training and 2 validation rooms at 64x96, one iteration
TINY = """\
_base_: [{base}]
model: {{backbone: {{weights: null}}}}
data:
  train: {{type: synthetic, split: train, size: 4, seed: 0}}
  val: {{type: synthetic, split: val, size: 2, seed: 0}}
  image_size: [64, 96]
  batch_size: 2
  num_workers: 0
train: {{iters: 1, log_every: 1, progress: false, plots: false, tensorboard: false}}
eval: {{batch_size: 2}}
"""


def train_tiny(root, base=ROCK):
    """Train the tiny config on ``base`` into ``root``/run; returns (config path, run folder)."""
    config = root / "tiny.yaml"
    config.write_text(TINY.format(base=base))
    out = root / "run"
    assert cli(["train", str(config), "--out", str(out)]) == 0
    return config, out
