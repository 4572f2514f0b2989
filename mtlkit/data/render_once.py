"""Splits rendered once and read back: how a dataset plugin whose samples are
generated (not read from files) lets several runs share one rendering.

A dataset plugin (the class or factory registered under kind ``dataset``) may
define two class methods; both take the options of a validated split, without
its selector (``name`` / ``type``) and without ``label_subset`` (every
dataset's option, kept by the caller):

* ``render_once(options) -> RenderOnce | None``: what rendering these options
  once to disk means (None: the options read recorded data, or keep their own
  cache; nothing to share);
* ``data_seed_option(options) -> str | None``: the option that seeds the
  generated world (``mtlkit ablate --data-seed`` sets it), None when the
  options read recorded data.

:func:`render_plan` asks a split's plugin; :func:`shared_split` says where a
split renders under a data folder and how it reads back. ``mtlkit ablate`` uses
them to render each generated split once for all its runs
(``mtlkit.engine.ablation``), ``mtlkit adapt`` for its target; nothing in the
engine names a dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from mtlkit.options import DATASET_SELECTOR_ALIAS, SELECTOR, selected
from mtlkit.registry import get_registry

#: the keys of a split spec that are not the plugin's own options
_NOT_OPTIONS = (SELECTOR, DATASET_SELECTOR_ALIAS, "label_subset")


@dataclass(frozen=True)
class RenderOnce:
    """How to render a generated split to a folder once and read it back."""

    #: a folder name: equal keys render equal samples (the first ``size`` of them)
    key: str
    #: the samples the split's options read
    size: int
    #: the seed of the generated world (reported as the data seed), if any
    seed: Optional[int]
    #: ``write(folder, size, workers, progress)``: render samples 0..size-1 into
    #: ``folder`` (skipping those already there) in a form that reads back fast
    write: Callable[[str, int, int, bool], Any]
    #: ``read_options(folder)``: the plugin's options that read ``folder`` back
    #: as the split (``size`` samples)
    read_options: Callable[[str], Dict[str, Any]]


def plugin_options(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """A split spec's options for its plugin: without selector and ``label_subset``."""
    return {k: v for k, v in spec.items() if k not in _NOT_OPTIONS}


def dataset_plugin(spec: Mapping[str, Any]) -> Tuple[str, Any]:
    """(name, registered class or factory) of a validated split ``spec``."""
    _, name = selected(spec, (SELECTOR, DATASET_SELECTOR_ALIAS))
    return name, get_registry().get("dataset", name)


def render_plan(spec: Mapping[str, Any]) -> Optional[Tuple[str, RenderOnce]]:
    """(plugin name, its :class:`RenderOnce`) for a validated split ``spec``,
    or None when its plugin renders nothing for these options."""
    name, plugin = dataset_plugin(spec)
    method = getattr(plugin, "render_once", None)
    if not callable(method):
        return None
    plan = method(plugin_options(spec))
    return None if plan is None else (name, plan)


@dataclass(frozen=True)
class SharedSplit:
    """A generated split rendered once into a folder under a data folder."""

    #: what renders it
    plan: RenderOnce
    #: the absolute folder it is rendered into: ``DATA_DIR/<plan.key>``
    folder: str
    #: the split spec that reads ``folder`` back (the plugin's read-back options,
    #: the original ``label_subset`` kept)
    read_spec: Dict[str, Any]


def shared_split(spec: Any, data_dir: str) -> Optional[SharedSplit]:
    """Where and how a validated split ``spec`` is rendered once under
    ``data_dir`` and read back, or None when it is not a mapping or its plugin
    renders nothing for these options. Renders nothing itself."""
    found = render_plan(spec) if isinstance(spec, Mapping) else None
    if found is None:
        return None
    name, plan = found
    folder = os.path.abspath(os.path.join(data_dir, plan.key))
    read = {DATASET_SELECTOR_ALIAS: name, **plan.read_options(folder)}
    if spec.get("label_subset") is not None:
        read["label_subset"] = spec["label_subset"]
    return SharedSplit(plan, folder, read)


def data_seed_option(spec: Mapping[str, Any]) -> Optional[str]:
    """The option of a validated split ``spec`` that seeds its generated world, or None."""
    _, plugin = dataset_plugin(spec)
    method = getattr(plugin, "data_seed_option", None)
    return method(plugin_options(spec)) if callable(method) else None
