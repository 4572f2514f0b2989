"""The config's own sections: the one home of their defaults, choices and ranges.

A config has the top-level keys :data:`TOP_LEVEL_KEYS`. Its sections are
checked (by :func:`mtlkit.config.validate_config`) and completed (by
:func:`mtlkit.config.resolve_config`) against the schemas here, with the
one option rule (:mod:`mtlkit.options`): an unknown key fails with a
did-you-mean, a wrong type names the field and the expected type, a value
outside the choices lists the valid ones. A ``None`` default accepts any
type.

* ``model``: which plugins (:data:`MODEL_KEYS`; the default fusion and
  weighting: :data:`MODEL_COMPONENT_DEFAULTS`) and the ROCK block's options
  (:data:`BLOCK`), measured inputs (:data:`MEASURED`). A plugin's own
  options are its class's ``defaults``.
* ``data``: :data:`DATA`, its ``augment`` section (:data:`AUGMENT`) and a
  split's ``label_subset`` (:data:`LABEL_SUBSET`); a split's other options
  are its dataset plugin's.
* ``train`` (:data:`TRAIN`) and ``eval`` (:data:`EVAL`, plus the primary
  task's post-processing options, whose defaults are the task's). Every
  option is documented in ``docs/engine.md``.

This module imports nothing of mtlkit but the ground floor.
"""

from __future__ import annotations

from typing import Any, Dict, List

from mtlkit.backbone import IMAGENET_MEAN
from mtlkit.errors import ConfigError
from mtlkit.options import Schema

#: the top-level keys of a config
TOP_LEVEL_KEYS = ("name", "description", "model", "data", "train", "eval")

# -- model ----------------------------------------------------------------------------
#: model keys that select a registered component: key -> kind
MODEL_COMPONENTS: Dict[str, str] = {"backbone": "backbone", "fusion": "fusion", "weighting": "weighting"}
#: the plugin a model uses when its config does not name one (the backbone has none: it is required)
MODEL_COMPONENT_DEFAULTS: Dict[str, str] = {"fusion": "residual", "weighting": "fixed"}

#: options of the ROCK block (``model.block``; :class:`mtlkit.models.rock.RockBlock` documents them)
BLOCK_DEFAULTS: Dict[str, Any] = {
    "encoder": True,
    "channels": 512,
    "separable": False,
    "pooling": "intensive",
    "plain_hidden": 256,
    "decoder": "per_task",
    "shared_channels": 256,
    "fold_bn": True,
}
BLOCK_CHOICES: Dict[str, Any] = {
    "pooling": ("intensive", "plain"),
    "decoder": ("per_task", "shared"),
}
BLOCK_RANGES: Dict[str, str] = {"channels": ">= 1", "plain_hidden": ">= 0", "shared_channels": ">= 0"}
BLOCK = Schema(BLOCK_DEFAULTS, BLOCK_CHOICES, BLOCK_RANGES)


def _check_measured(options: Dict[str, Any], where: str) -> None:
    for field in ("block", "early_fusion"):
        names = options[field]
        if not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}.{field}: expected a list of task names, got {names!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.{field}: a task is listed twice: {names}")


#: options of measured inputs (``model.measured``; :mod:`mtlkit.models.measured`
#: documents them): which tasks' sensor maps the ROCK block decodes
#: (``block``) or the backbone reads beside RGB (``early_fusion``), the
#: per-sample probability of using them in training, and how the block reads them.
#: Both lists empty (the default): nothing is built, the model is the plain one.
MEASURED_DEFAULTS: Dict[str, Any] = {
    "block": [],
    "early_fusion": [],
    "p_train": 1.0,
    "mode": "replace",
    "encoder": "resize",
    "encoder_channels": 32,
    "early_fusion_mean": 0.0,
    "early_fusion_std": 1.0,
}
MEASURED_CHOICES: Dict[str, Any] = {"encoder": ("resize", "conv"), "mode": ("replace", "beside")}
MEASURED_RANGES: Dict[str, str] = {"p_train": "[0, 1]", "encoder_channels": ">= 1", "early_fusion_std": "> 0"}
MEASURED = Schema(MEASURED_DEFAULTS, MEASURED_CHOICES, MEASURED_RANGES, check=_check_measured)

#: the keys of the model section (components are checked by their plugins)
MODEL_KEYS: Dict[str, Any] = {"backbone": None, "fusion": None, "weighting": None, "tasks": {},
                              "block": BLOCK_DEFAULTS, "measured": MEASURED_DEFAULTS}

# -- data -----------------------------------------------------------------------------
DATA_SPLITS = ("train", "val", "test")
DATA_DEFAULTS: Dict[str, Any] = {
    "train": None,                # a dataset plugin's section: {type: NAME, <its options>}
    "val": None,
    "test": None,
    "image_size": None,           # [H, W] fed to the network (null: each sample keeps its size)
    "batch_size": 8,
    "num_workers": 0,
    "augment": {},                # AUGMENT_DEFAULTS
}
DATA_RANGES: Dict[str, str] = {"batch_size": ">= 1", "num_workers": ">= 0"}
#: ``data.image_size``: the longest side fed to the network (8192^2 is 64 megapixels, the most
#: mtlkit reads of an image) and the most one side may be of the other ([1, 100000] trained to AP 0)
MAX_IMAGE_SIDE = 8192
MAX_ASPECT = 16

#: options of ``data.augment`` (:func:`mtlkit.data.transforms.build_transforms` documents them)
AUGMENT_DEFAULTS: Dict[str, Any] = {
    "enabled": True,
    "photometric": 0.5,
    "brightness": 0.125,
    "contrast": 0.5,
    "saturation": 0.5,
    "hue": 0.05,
    "expand": 0.5,
    "expand_max_ratio": 4.0,
    "fill": list(IMAGENET_MEAN),
    "crop": True,
    "crop_min_ious": [None, 0.1, 0.3, 0.5, 0.7, 0.9],
    "crop_min_scale": 0.3,
    "crop_aspect_range": [0.5, 2.0],
    "crop_trials": 50,
    "flip": 0.5,
}
AUGMENT = Schema(AUGMENT_DEFAULTS)
DATA = Schema({**DATA_DEFAULTS, "augment": AUGMENT_DEFAULTS}, ranges=DATA_RANGES)


def _check_label_subset(options: Dict[str, Any], where: str) -> None:
    tasks = options["tasks"]
    if not tasks or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"{where}.tasks: expected a non-empty list of task names, got {tasks!r}")


#: a split's ``label_subset``: only ``fraction`` of the samples carry the
#: listed ``tasks``' labels (:class:`mtlkit.data.dataset.LabelSubset`)
LABEL_SUBSET_DEFAULTS: Dict[str, Any] = {"fraction": 1.0, "tasks": [], "seed": 0}
LABEL_SUBSET = Schema(LABEL_SUBSET_DEFAULTS, ranges={"fraction": "[0, 1]"}, check=_check_label_subset)

# -- train and eval ---------------------------------------------------------------------

TRAIN_DEFAULTS: Dict[str, Any] = {
    # Length of the run, in optimiser steps (each step sees `accumulate`
    # batches of data.batch_size images per process).
    "iters": 1000,
    "accumulate": 1,
    "optimizer": {
        "name": "sgd",            # sgd | adam | adamw
        "lr": 1e-3,               # for the global batch (not scaled automatically)
        "momentum": 0.9,          # sgd
        "nesterov": False,        # sgd
        "weight_decay": 5e-4,
        "betas": [0.9, 0.999],    # adam / adamw
        "eps": 1e-8,              # adam / adamw
        "fused": None,            # adam / adamw: one fused kernel for all parameters
                                  # (null: on when every parameter is on a CPU or CUDA device)
        "no_decay_norm_bias": False,  # no weight decay on biases and norm layers
    },
    "schedule": {
        "name": "multistep",      # multistep | cosine | constant
        "milestones": [0.67, 0.89],  # multistep: values < 1 are fractions of iters, else iterations
        "gamma": 0.1,             # multistep: factor at each milestone
        "min_lr_factor": 0.0,     # cosine: final lr = lr * min_lr_factor
        "warmup_iters": 0,        # linear warm-up from lr * warmup_factor
        "warmup_factor": 0.001,
    },
    "clip_grad_norm": 0.0,        # 0 = no clipping
    "amp": False,                 # autocast: on CUDA in amp_dtype, on CPU in bfloat16
    "amp_dtype": "bfloat16",      # bfloat16 | float16 (float16: CUDA only, with a GradScaler)
    "channels_last": False,       # NHWC weights and inputs (faster convolutions on CPU)
    "ema": {"enabled": False, "decay": 0.9998, "warmup": True, "evaluate": True},
    "eval_every": 0,              # iterations between evaluations on data.val (0: at the end only)
    "eval_at_end": True,
    "checkpoint_every": 0,        # iterations between checkpoints (0: at the end only)
    "log_every": 20,              # iterations between metrics.jsonl records
    "seed": 0,
    "deterministic": False,       # torch.use_deterministic_algorithms (slower on GPU)
    "device": "auto",             # auto | cpu | cuda
    "num_threads": 0,             # torch intra-op threads (0: torch's default). On a small CPU
                                  # box with a data worker rendering beside it, 1 is fastest
    "sync_bn": False,             # SyncBatchNorm under DDP
    "find_unused_parameters": False,
    "progress": True,             # tqdm progress bar on stderr (rank 0)
    "tensorboard": True,          # write TensorBoard events when tensorboard is installed
    "plots": True,                # training curves / per-class AP PNGs in the run directory
}

TRAIN_CHOICES: Dict[str, List[Any]] = {
    "optimizer.name": ["sgd", "adam", "adamw"],
    "schedule.name": ["multistep", "cosine", "constant"],
    "amp_dtype": ["bfloat16", "float16"],
    "device": ["auto", "cpu", "cuda"],
}

#: the evaluation loop's options; the eval section also holds the primary
#: task's post-processing options (their defaults and ranges come from the
#: task, :attr:`mtlkit.task.Task.postprocess_options`, see
#: :func:`mtlkit.config.section_schema`: the task's ``defaults`` are their one home)
EVAL_DEFAULTS: Dict[str, Any] = {
    "split": "val",               # data split evaluated by `mtlkit eval` and during training
    "batch_size": None,           # default: data.batch_size
    "num_workers": None,          # default: data.num_workers
    "export_detections": True,    # write the primary task's results file (detections.json)
}

EVAL_CHOICES: Dict[str, List[Any]] = {
    "split": ["train", "val", "test"],
}

#: a seed: what every RNG mtlkit seeds takes (torch's and numpy's refuse a negative one)
SEED_RANGE = "[0, 9223372036854775807]"

# Ranges checked by validation (``mtlkit.config.check_ranges``): ">= 0",
# "> 0", "[0, 1]" (inclusive), "[0, 1)" ... A list value has each element checked.
TRAIN_RANGES: Dict[str, str] = {
    "iters": ">= 0",
    "accumulate": ">= 1",
    "optimizer.lr": ">= 0",
    "optimizer.momentum": "[0, 1]",
    "optimizer.weight_decay": ">= 0",
    "optimizer.betas": "[0, 1)",
    "optimizer.eps": "> 0",
    "schedule.milestones": ">= 0",
    "schedule.gamma": "> 0",
    "schedule.min_lr_factor": ">= 0",
    "schedule.warmup_iters": ">= 0",
    "schedule.warmup_factor": ">= 0",
    "clip_grad_norm": ">= 0",
    "ema.decay": "[0, 1]",
    "eval_every": ">= 0",
    "checkpoint_every": ">= 0",
    "log_every": ">= 0",
    "num_threads": ">= 0",
    "seed": SEED_RANGE,
}

EVAL_RANGES: Dict[str, str] = {
    "batch_size": ">= 1",
    "num_workers": ">= 0",
}

TRAIN_LENGTHS: Dict[str, int] = {"optimizer.betas": 2}
TRAIN = Schema(TRAIN_DEFAULTS, TRAIN_CHOICES, TRAIN_RANGES, TRAIN_LENGTHS)
#: the eval loop's own options (the primary task's post-processing options
#: join them: :func:`mtlkit.config.section_schema`)
EVAL = Schema(EVAL_DEFAULTS, EVAL_CHOICES, EVAL_RANGES)
