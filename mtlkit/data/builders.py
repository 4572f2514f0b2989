"""Datasets and splits from the resolved config: :func:`build_dataset`,
:func:`build_split` (re-exported by :mod:`mtlkit.data`; a module of their
own so that :class:`mtlkit.data.concat.ConcatDataset` builds its sources
without importing the package that imports it).

Both take what the resolved config holds (:class:`~mtlkit.resolved.SplitSpec`,
:class:`~mtlkit.resolved.ResolvedConfig`) and check nothing again; given a
plain dict (a caller without a config) they check it once, with the config's
own rule (:mod:`mtlkit.resolved`).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from mtlkit.data.dataset import LabelSubset, TransformedDataset
from mtlkit.data.transforms import build_transforms
from mtlkit.errors import ConfigError
from mtlkit.resolved import DataSpec, ResolvedConfig, SplitSpec, check_data, data_spec, split_spec
from mtlkit.schema import TRAIN_DEFAULTS


def build_dataset(spec: Union[SplitSpec, Mapping[str, Any], str], where: str = "dataset"):
    """A dataset from a split of the resolved config, or from
    ``{"name": name, <options>}`` (or ``{"type": name, ...}``, the same
    selector under its older name: :mod:`mtlkit.options`), checked here.

    Every dataset also takes ``label_subset: {fraction, tasks, seed}``: only that
    fraction of the samples carry the listed tasks' labels
    (:class:`mtlkit.data.dataset.LabelSubset`).

    The name is looked up in the registry (kind ``dataset``); the options,
    merged over the factory's ``defaults``, are passed as keyword arguments.

    :param where: the config path used in error messages, e.g. ``"data.train"``.
    """
    if not isinstance(spec, SplitSpec):
        spec = split_spec(spec, where)
    dataset = spec.plugin(**spec.options)
    subset = spec.label_subset
    if subset is not None:
        dataset = LabelSubset(dataset, subset["fraction"], subset["tasks"], subset["seed"])
    return dataset


def build_split(cfg: Union[ResolvedConfig, Mapping[str, Any]], split: str, train: Optional[bool] = None,
                seed: Optional[int] = None) -> TransformedDataset:
    """The dataset of ``data.<split>`` wrapped with its transforms.

    :param cfg: the resolved config, or a ``data`` section (checked here).
    :param train: augmentation on (default: ``split == "train"``), as
        ``data.augment`` says (:func:`mtlkit.data.transforms.build_transforms`),
        resized to ``data.image_size``.
    :param seed: seeds the per-item augmentation (default: ``train.seed``).
    """
    if isinstance(cfg, ResolvedConfig):
        data: DataSpec = cfg.data_spec
        default_seed = cfg["train"]["seed"]
    else:
        data, default_seed = data_spec(check_data(cfg)), TRAIN_DEFAULTS["seed"]
    if split not in data.splits:
        raise ConfigError(f"data.{split} is missing: it must give the dataset of that split")
    train = (split == "train") if train is None else train
    dataset = build_dataset(data.splits[split])
    transform = build_transforms(data.augment, data.image_size, train)
    return TransformedDataset(dataset, transform, seed=int(default_seed if seed is None else seed))
