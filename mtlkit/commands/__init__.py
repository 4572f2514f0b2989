"""The CLI commands, one module each (wired together by :mod:`mtlkit.cli`):
``train``, ``evaluate`` (``mtlkit eval``), ``detect``, ``ablate``, ``pretrain``,
``bench``, ``plugins``, ``data`` (``mtlkit data synth | nyuv2``). Each module exposes
``add_arguments(parser)`` and ``main(args) -> int``; ``_common`` holds the
arguments they share (config path, ``-o`` overrides).
"""
