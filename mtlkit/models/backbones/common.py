"""Loading torchvision-format weights into a backbone by parameter name.

The backbone interface and what every backbone shares (the base class,
frozen BatchNorm, stage freezing, ImageNet statistics) live on the ground
floor, :mod:`mtlkit.backbone`; reading a weights file lives in
:mod:`mtlkit.utils.weights`. Both are re-exported here, where they were.
"""

from __future__ import annotations

import warnings
from typing import List, Mapping, Sequence

import torch
from torch import nn

from mtlkit.backbone import (  # noqa: F401 - also imported from here
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    FrozenBatchNorm2d,
    freeze_batchnorm,
    freeze_modules,
    set_batchnorm_eval,
)
from mtlkit.errors import ConfigError
from mtlkit.utils.weights import (  # noqa: F401 - also imported from here
    BUILTIN_DIR,
    BUILTIN_PREFIX,
    read_state_dict,
    resolve_weights_path,
)


def _summarise(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_backbone_weights(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str = "<state dict>",
    ignore_prefixes: Sequence[str] = (),
    optional_prefixes: Sequence[str] = (),
    field: str = "model.backbone.weights",
) -> List[str]:
    """Copy ``state`` into ``module`` by parameter name.

    * keys starting with one of ``ignore_prefixes`` (e.g. a classifier) are
      dropped silently;
    * a module key missing from ``state`` is an error (:class:`ConfigError`
      listing the names) unless it starts with one of ``optional_prefixes``
      or is a ``num_batches_tracked`` counter;
    * a shape mismatch is an error naming the key and both shapes;
    * keys of ``state`` the module does not have are reported in a warning.

    Returns the list of optional keys that were left at their initial values.
    """
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in ignore_prefixes)}
    unexpected = sorted(k for k in state if k not in own and not k.endswith("num_batches_tracked"))
    missing_all = [k for k in own if k not in state]
    missing = [k for k in missing_all
               if not k.endswith("num_batches_tracked")
               and not any(k.startswith(p) for p in optional_prefixes)]
    left_out = [k for k in missing_all if k not in missing and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConfigError(
            f"{field}: '{source}' lacks {len(missing)} weight(s) of {type(module).__name__}: "
            f"{_summarise(missing)}"
            + (f"; it has unexpected key(s): {_summarise(unexpected)}" if unexpected else "")
            + " (expected a torchvision-format state dict of the same architecture)"
        )
    bad_shapes = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if bad_shapes:
        raise ConfigError(f"{field}: '{source}' has weights of the wrong shape: "
                          f"{_summarise(bad_shapes)}")
    if unexpected:
        warnings.warn(f"{field}: '{source}' has {len(unexpected)} key(s) that "
                      f"{type(module).__name__} does not use, ignored: {_summarise(unexpected)}",
                      RuntimeWarning, stacklevel=3)
    with torch.no_grad():
        for k, v in state.items():
            if k in own:
                own[k].copy_(v.to(own[k].dtype))
    return left_out
