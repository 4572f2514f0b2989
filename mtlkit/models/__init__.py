"""Everything a model is made of.

* the composer (:mod:`.compose`, :func:`mtlkit.build_model`) and the ROCK
  block (:mod:`.rock`): built from the resolved config, through the
  registry, naming no task, fusion or backbone;
* the built-ins the plugins register: backbones (:mod:`.backbones`), SSD and
  the detection task (:mod:`.ssd`), the auxiliary tasks
  (:mod:`.auxiliary_tasks`), the fusions (:mod:`.fusions`), the loss
  weightings (:mod:`.weightings`) and the gradient-level ones
  (:mod:`.gradient_weightings`).
"""
