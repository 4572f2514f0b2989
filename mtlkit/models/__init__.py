"""Network building blocks: backbones (:mod:`mtlkit.models.backbones`) and the
SSD detector parts (:mod:`mtlkit.models.ssd`: priors, extra layers, multibox
head, MultiBox loss). The composed multi-task model (:func:`mtlkit.build_model`) lives in :mod:`mtlkit.models.compose`."""
