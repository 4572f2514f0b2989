"""Pieces shared by the backbones: frozen BatchNorm, stage freezing, weight loading."""

from __future__ import annotations

import os
import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import torch
from torch import nn

from mtlkit.errors import ConfigError

#: ImageNet statistics of torchvision's pretrained models (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters.

    ``weight``, ``bias``, ``running_mean`` and ``running_var`` are *buffers*
    (same names as :class:`torch.nn.BatchNorm2d`, so torchvision state dicts
    load), hence never trained and never updated; ``num_batches_tracked`` in a
    loaded state dict is ignored. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a
    :class:`FrozenBatchNorm2d` carrying its current statistics (in place;
    returns ``module``, or the frozen layer when ``module`` itself is a BN)."""
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze_modules(modules: Iterable[nn.Module]) -> None:
    """Stop gradients to every parameter of ``modules`` (their BatchNorms are
    kept in eval mode by the owning backbone's ``train()``)."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


def set_batchnorm_eval(modules: Iterable[nn.Module]) -> None:
    """Put every BatchNorm inside ``modules`` in eval mode (running stats frozen)."""
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.eval()


def _summarise(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


#: ``builtin:NAME`` weights are ``mtlkit/weights/NAME.pt`` (shipped with the package)
BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "weights")


def resolve_weights_path(path: str, field: str = "model.backbone.weights") -> str:
    """A weights path as given, or for ``builtin:NAME`` the file shipped in
    ``mtlkit/weights/`` (a :class:`ConfigError` lists them when NAME is unknown)."""
    path = os.fspath(path)
    if not path.startswith(BUILTIN_PREFIX):
        return path
    name = path[len(BUILTIN_PREFIX):]
    full = os.path.join(BUILTIN_DIR, f"{name}.pt")
    if not os.path.isfile(full):
        shipped = sorted(f[:-3] for f in os.listdir(BUILTIN_DIR) if f.endswith(".pt")) \
            if os.path.isdir(BUILTIN_DIR) else []
        raise ConfigError(f"{field}: no built-in weights '{name}'; shipped: "
                          f"{', '.join(BUILTIN_PREFIX + n for n in shipped) or 'none'}")
    return full


def read_state_dict(path: str, field: str = "model.backbone.weights") -> Dict[str, torch.Tensor]:
    """Load a state dict of tensors from ``path`` (``weights_only=True``).

    Accepts a plain ``{name: tensor}`` dict or a checkpoint holding one under
    ``"state_dict"`` or ``"model"``. Raises :class:`ConfigError` naming
    ``field`` and the file when it is missing or not a state dict.
    """
    path = resolve_weights_path(path, field)
    if not os.path.isfile(path):
        raise ConfigError(f"{field}: weights file '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ConfigError(f"{field}: cannot read weights file '{path}' "
                          f"(expected a torch state dict saved with torch.save): {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConfigError(f"{field}: '{path}' is not a state dict (a dict of name -> tensor)")
    return dict(obj)


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


class Backbone(nn.Module):
    """Base class of every backbone plugin (the registry refuses others).

    A subclass sets the attributes of the backbone contract (``out_channels``,
    ``strides``; ``mean`` / ``std`` default to ImageNet's) and implements
    ``forward``. The built-in backbones also fill :meth:`stages` (a list of
    modules, shallowest first; the unit of ``frozen_stages``, set up by
    :meth:`_setup_freezing`) and :meth:`load_weights`; a plugin that does not
    has no stage to freeze.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    out_channels: List[int]
    strides: List[int]
    frozen_stages: int = 0

    def _setup_freezing(self, frozen_bn: bool, frozen_stages: int) -> None:
        stages = self.stages()
        if not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= len(stages):
            raise ConfigError(f"model.backbone.frozen_stages: expected an integer in "
                              f"0..{len(stages)} for {type(self).__name__}, got {frozen_stages!r}")
        self.frozen_bn = bool(frozen_bn)
        self.frozen_stages = frozen_stages
        if self.frozen_bn:
            freeze_batchnorm(self)
        freeze_modules(stages[:frozen_stages])

    def stages(self) -> List[nn.Module]:
        return []

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode:
            # Frozen stages keep their BatchNorm statistics as loaded.
            set_batchnorm_eval(self.stages()[: self.frozen_stages])
        return self

    def _maybe_load(self, weights: Optional[str], **kwargs) -> None:
        if weights is None:
            return
        if not isinstance(weights, (str, os.PathLike)):
            raise ConfigError(f"model.backbone.weights: expected a file path or null, got {weights!r}")
        state = read_state_dict(weights)
        self.load_weights(state, source=os.fspath(weights), **kwargs)

    def load_weights(self, state: Mapping[str, torch.Tensor], source: str = "<state dict>"):
        raise NotImplementedError
