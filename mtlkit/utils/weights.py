"""Reading a weights file: a torch state dict, or one shipped with mtlkit (``builtin:NAME``)."""

from __future__ import annotations

import os
from typing import Dict, Mapping

import torch

from mtlkit.errors import ConfigError

#: ``builtin:NAME`` weights are ``mtlkit/weights/NAME.pt`` (shipped with the package)
BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


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
