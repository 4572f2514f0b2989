"""Core CLI commands (see :mod:`mtlkit.cli`)."""
