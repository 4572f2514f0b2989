"""Arguments shared by the engine's commands."""

from __future__ import annotations

import argparse

from mtlkit.errors import ConfigError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the config YAML file")
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. -o train.optimizer.lr=0.001 "
                             "(YAML-typed; repeatable)")


def add_measured_argument(parser: argparse.ArgumentParser) -> None:
    """``--measured TASK ...``: the measured modalities (a sensor's maps) the
    model reads, for a model with ``model.measured`` (docs/models.md)."""
    parser.add_argument("--measured", nargs="+", default=[], metavar="TASK",
                        help="measured modalities the model reads from a sensor, e.g. depth normals "
                             "(default: none, the model runs on its own predictions; 'none' says so)")


def measured_names(values) -> list:
    """``--measured`` values -> task names (``none`` alone: no modality)."""
    names = [v for v in (values or []) if v != "none"]
    if "none" in (values or []) and names:
        raise ConfigError(f"--measured: 'none' cannot be combined with task names ({' '.join(names)})")
    return names
