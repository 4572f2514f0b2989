"""Built-in backbones (registered through the `mtlkit` entry point 'backbones').

* ``resnet50``: ResNet-50 with a dilated layer4 (stride 16), returns ``[layer4]``
  (2048 channels) — the ROCK paper's backbone.
* ``vgg16``: SSD300's VGG16, returns ``[conv4_3 (L2-normalised), fc7]``.
* ``resnet_small``: a small dilated ResNet (256 channels at stride 16) that
  trains on CPU in minutes.
"""

from mtlkit import hookimpl
from mtlkit.models.backbones import VGG16SSD, ResNet50Dilated, ResNetSmall


@hookimpl
def mtlkit_register_backbones(registry):
    """Register the built-in backbones."""
    registry.add("resnet50", ResNet50Dilated)
    registry.add("vgg16", VGG16SSD)
    registry.add("resnet_small", ResNetSmall)
