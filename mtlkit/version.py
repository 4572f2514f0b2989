"""The version of mtlkit: its one home (the package, ``setup.py``, the
registry's origins and every checkpoint read it from here)."""

__version__ = "0.1.0"
