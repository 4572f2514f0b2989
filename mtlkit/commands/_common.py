"""Arguments shared by the engine's commands."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the config YAML file")
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. -o train.optimizer.lr=0.001 "
                             "(YAML-typed; repeatable)")
