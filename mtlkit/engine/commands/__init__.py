"""The engine's CLI commands: ``mtlkit train``, ``mtlkit eval``, ``mtlkit detect``
(and the lead's ``mtlkit ablate``). Each module exposes ``add_arguments(parser)``
and ``main(args) -> int``."""
