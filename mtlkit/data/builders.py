"""Datasets and splits from config sections: :func:`build_dataset`,
:func:`build_split` (re-exported by :mod:`mtlkit.data`; a module of their
own so that :class:`mtlkit.data.concat.ConcatDataset` builds its sources
without importing the package that imports it)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from mtlkit.data.dataset import TransformedDataset
from mtlkit.data.options import validate_options
from mtlkit.data.transforms import build_transforms
from mtlkit.errors import ConfigError
from mtlkit.options import DATASET_SELECTOR_ALIAS, SELECTOR, component, selected


def build_dataset(cfg: Mapping[str, Any], where: str = "dataset", validated: bool = False):
    """Build a dataset from ``{"name": name, <options>}`` (or ``{"type":
    name, ...}``, the same selector under its older name: :mod:`mtlkit.options`).

    Every dataset also takes ``label_subset: {fraction, tasks, seed}``: only that
    fraction of the samples carry the listed tasks' labels
    (:class:`mtlkit.data.dataset.LabelSubset`).

    The name is looked up in the registry (kind ``dataset``); the options are
    checked against the factory's ``defaults`` (unknown option -> ConfigError
    with a did-you-mean) and passed as keyword arguments, merged over the
    defaults.

    :param where: the config path used in error messages, e.g. ``"data.train"``.
    :param validated: ``cfg`` comes from a config returned by
        :func:`mtlkit.config.validate_config`, which checked its options: they
        are not checked again (``label_subset``, which that pass leaves to
        the dataset, still is).
    """
    from mtlkit.registry import RegistryError, get_registry

    keys = (SELECTOR, DATASET_SELECTOR_ALIAS)
    if not isinstance(cfg, (str, Mapping)):
        raise ConfigError(f"{where} must be a mapping with a 'name' (or 'type'), got {cfg!r}")
    if isinstance(cfg, Mapping) and not any(k in cfg for k in keys):
        raise ConfigError(f"{where}: missing 'type' or 'name' (the name of a dataset plugin, "
                          "e.g. synthetic, nyuv2, coco)")
    cfg = component(cfg, where, SELECTOR, (DATASET_SELECTOR_ALIAS,))
    key, name = selected(cfg, keys)
    options = {k: v for k, v in cfg.items() if k not in (*keys, "label_subset")}
    try:
        factory = get_registry().get("dataset", name)
    except RegistryError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None
    defaults = getattr(factory, "defaults", None)
    if defaults is not None:
        if validated:  # what validate_options gives for valid options
            options = {**defaults, **{k: v for k, v in options.items() if v is not None}}
        else:
            options = validate_options(options, defaults, f"{where} (dataset '{name}')")
    dataset = factory(**options)
    subset = cfg.get("label_subset")
    if subset is not None:
        from mtlkit.data.dataset import LabelSubset

        if not isinstance(subset, Mapping):
            raise ConfigError(f"{where}.label_subset must be a mapping {{fraction, tasks, seed}}, got {subset!r}")
        subset = validate_options(subset, LabelSubset.OPTIONS, f"{where}.label_subset")
        dataset = LabelSubset(dataset, subset["fraction"], subset["tasks"], subset["seed"],
                              where=f"{where}.label_subset")
    return dataset


def build_split(data_cfg: Mapping[str, Any], split: str, train: Optional[bool] = None,
                seed: Optional[int] = None, validated: bool = False) -> TransformedDataset:
    """The dataset of ``data_cfg[split]`` wrapped with its transforms.

    ``train`` (default: ``split == "train"``) switches augmentation on;
    ``data_cfg["augment"]`` and ``data_cfg["image_size"]`` configure it (see
    :func:`mtlkit.data.transforms.build_transforms`). ``seed`` (default
    ``data_cfg.get("seed", 0)``) seeds the per-item augmentation.

    ``validated``: ``data_cfg`` is the data section of a config returned by
    :func:`mtlkit.config.validate_config` (the engine's case), whose options
    are built as they are, without a second check.
    """
    if split not in data_cfg:
        raise ConfigError(f"data.{split} is missing: it must give the dataset of that split")
    train = (split == "train") if train is None else train
    dataset = build_dataset(data_cfg[split], where=f"data.{split}", validated=validated)
    transform = build_transforms(data_cfg.get("augment"), data_cfg.get("image_size"), train,
                                 validated=validated)
    seed = int(data_cfg.get("seed", 0)) if seed is None else int(seed)
    return TransformedDataset(dataset, transform, seed=seed)
