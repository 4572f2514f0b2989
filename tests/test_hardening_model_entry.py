"""Issue 19, part 2: the model's entry points check their arguments however
the model was built. The image check lives in MultiTaskModel.forward (it was a
pre-hook only mtlkit.build_model installed: the trainer's model, built by
mtlkit.models.compose.build_model, passed a uint8 or NaN batch on); losses()
names a wrong outputs / batch argument; build_model names a wrong image_size."""

import math
import os

import pytest
import torch

import mtlkit
from mtlkit.config import load_config
from mtlkit.models.compose import build_model
from mtlkit.models.inputs import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
SMALL = ["data.image_size=[64,96]", "model.backbone.weights=null"]


@pytest.fixture(scope="module")
def composed():
    """The model as the trainer and the evaluator build it (not through mtlkit.build_model)."""
    return build_model(load_config(ROCK, SMALL))


@pytest.mark.parametrize("images, needle", [
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "torch.uint8 values, expected floating-point RGB"),
    (torch.full((1, 3, 32, 32), math.nan), "3072 value(s) are NaN or inf"),
    (torch.rand(1, 32, 32, 3), "channels last?"),
    (torch.rand(1, 3, 32, 32, dtype=torch.float64), "the model's weights are torch.float32"),
])
def test_the_forward_checks_images_however_the_model_was_built(composed, images, needle):
    for mode in (composed.train(), composed.eval()):
        with pytest.raises(InputError) as info:
            mode(images)
        assert str(info.value).startswith("images: ") and needle in str(info.value)


def test_a_half_model_takes_half_images_and_names_float_ones(composed):
    import copy

    half = copy.deepcopy(composed).eval().to(torch.bfloat16)
    half(torch.rand(1, 3, 64, 96, dtype=torch.bfloat16))  # its own dtype: accepted
    with pytest.raises(InputError, match=r"images: torch.float32 values, the model's weights are torch.bfloat16"):
        half(torch.rand(1, 3, 64, 96))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        composed.eval()(torch.rand(1, 3, 64, 96))  # under autocast float32 images are fine


def test_the_check_is_not_installed_twice():
    model = mtlkit.build_model(load_config(ROCK, SMALL))
    assert not model._forward_pre_hooks  # one home: the forward


def test_losses_name_wrong_outputs_and_batch(composed):
    outputs = composed.train()(torch.rand(2, 3, 64, 96))
    partial = {k: v for k, v in outputs.items() if k != "depth"}
    with pytest.raises(InputError, match=r"outputs: no prediction for task\(s\) 'depth'"):
        composed.losses(partial, {"image": torch.rand(2, 3, 64, 96)})
    with pytest.raises(InputError, match=r"outputs: expected the dict model\(images\) returns"):
        composed.losses([outputs], {"image": torch.rand(2, 3, 64, 96)})
    with pytest.raises(InputError, match=r"batch: expected a dict of the batch's images and targets"):
        composed.losses(outputs, [torch.rand(2, 3, 64, 96)])


@pytest.mark.parametrize("size", [(0, 96), (64,), "64x96", (64.0, 96), (True, 96), 64])
def test_build_model_names_a_wrong_image_size(size):
    with pytest.raises(InputError, match=r"image_size: expected \(height, width\) positive integers"):
        mtlkit.build_model(load_config(ROCK, SMALL), image_size=size)
