"""Research tools: measurements of the data or the method that no training
run needs (``python -m mtlkit.research.<tool>``).

* :mod:`.probe` — where a synthetic set puts class evidence (RGB, geometry or
  both), measured by a small CNN trained on object crops.
"""
