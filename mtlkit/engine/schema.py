"""The ``train`` and ``eval`` config sections: defaults, types and choices.

:func:`mtlkit.config.validate_config` checks a config against these (an
unknown key fails with a did-you-mean, a wrong type names the field and the
expected type, a value outside :data:`TRAIN_CHOICES` lists the valid ones).
A ``None`` default accepts any type. Every option is documented in
``docs/engine.md``.
"""

from __future__ import annotations

from typing import Any, Dict, List

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
#: :func:`mtlkit.config.section_schema`)
EVAL_DEFAULTS: Dict[str, Any] = {
    "split": "val",               # data split evaluated by `mtlkit eval` and during training
    "batch_size": None,           # default: data.batch_size
    "num_workers": None,          # default: data.num_workers
    "export_detections": True,    # write the primary task's results file (detections.json)
}

EVAL_CHOICES: Dict[str, List[Any]] = {
    "split": ["train", "val", "test"],
}

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
}

EVAL_RANGES: Dict[str, str] = {
    "batch_size": ">= 1",
    "num_workers": ">= 0",
}
