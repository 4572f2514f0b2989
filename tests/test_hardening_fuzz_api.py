"""Issue 19: a fuzz test over the model's public Python entry points
(``model(images)``, ``model.detect``, ``model.losses``): whatever the dtype,
shape or values (NaN, inf, empty), the answer is a correct-looking result or
one clear line (an :class:`mtlkit.errors.MtlkitError`), never torch's own
message from deep inside, never a NaN loss or boxes from NaN images."""

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mtlkit
from mtlkit.config import load_config
from mtlkit.errors import MtlkitError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
DTYPES = [torch.float32] * 5 + [torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int64, torch.bool]
VALUES = st.one_of(st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, 1.0, 255.0, -1.0, math.nan, math.inf]))


@pytest.fixture(scope="module")
def model():
    cfg = load_config(os.path.join(ROOT, "configs", "synthetic", "rock.yaml"), ["model.backbone.weights=null"])
    return mtlkit.build_model(cfg)


def _clear(exc: BaseException) -> bool:
    message = str(exc)
    return isinstance(exc, MtlkitError) and bool(message) and "\n" not in message


@st.composite
def image_inputs(draw):
    kind = draw(st.sampled_from(["tensor"] * 12 + ["list", "numpy", "none", "scalar"]))
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(st.floats(allow_nan=True))
    # about half the examples well-formed (so that accepted inputs are checked too), the rest odd
    if draw(st.booleans()):
        dims = [draw(st.integers(1, 3)), 3, draw(st.integers(1, 40)), draw(st.integers(1, 40))]
    else:
        dims = draw(st.one_of(st.lists(st.integers(0, 5), min_size=0, max_size=5),
                              st.just([0, 3, 8, 8]), st.just([2, 8, 8, 3]), st.just([1, 4, 8, 8])))
    fill = draw(st.sampled_from(["random"] * 4 + ["constant"]))
    if fill == "constant":
        values = torch.full(dims, draw(VALUES), dtype=torch.float64)
    else:
        values = torch.rand(dims, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))),
                            dtype=torch.float64) * draw(st.sampled_from([1.0] * 4 + [255.0, 2.0]))
        if values.numel() and draw(st.integers(0, 3)) == 0:
            values.view(-1)[draw(st.integers(0, values.numel() - 1))] = draw(VALUES)
    dtype = draw(st.sampled_from(DTYPES))
    tensor = torch.nan_to_num(values).clamp(-5, 300).to(dtype) if not dtype.is_floating_point else values.to(dtype)
    if kind == "list":
        return list(tensor) if tensor.dim() else [tensor]
    if kind == "numpy":
        return tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
    return tensor


@FUZZ
@given(images=image_inputs())
def test_fuzz_model_forward_and_detect(model, images):
    model.eval()
    try:
        outputs = model.detect(images)
    except Exception as exc:  # noqa: BLE001 - the property: only one clear line
        assert _clear(exc), repr(exc)
        with pytest.raises(MtlkitError):
            model(images)  # the forward refuses the same input
        return
    # accepted: a finite RGB batch in [0, 1] of the model's dtype
    assert isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[1] == 3 and images.shape[0] >= 1
    assert images.dtype == torch.float32 and bool(torch.isfinite(images).all())
    assert float(images.min()) >= -1e-3 and float(images.max()) <= 1 + 1e-3
    dets = outputs["detection"]
    assert len(dets) == images.shape[0]
    for det in dets:
        assert bool(torch.isfinite(det["boxes"]).all()) and bool(torch.isfinite(det["scores"]).all())
    assert bool(torch.isfinite(outputs["depth"]).all())


@st.composite
def batches(draw):
    b = 2
    h, w = 32, 48
    n = [draw(st.integers(0, 3)) for _ in range(b)]

    def box_list():
        out = []
        for i in range(b):
            coords = draw(st.lists(st.one_of(st.floats(0, 32), VALUES, st.floats(-100, 100)), min_size=4 * n[i],
                                   max_size=4 * n[i]))
            t = torch.tensor(coords, dtype=torch.float32).reshape(-1, 4)
            if draw(st.booleans()) and t.numel():  # mostly well-formed: x1 <= x2, y1 <= y2
                t = torch.cat([torch.minimum(t[:, :2], t[:, 2:]), torch.maximum(t[:, :2], t[:, 2:])], 1)
            out.append(t)
        return out

    boxes = box_list()
    labels = [torch.tensor(draw(st.lists(st.integers(-1, 13), min_size=len(x), max_size=len(x))), dtype=torch.int64)
              for x in boxes]
    batch = {"image": torch.rand(b, 3, h, w), "boxes": boxes, "labels": labels,
             "scene": torch.tensor(draw(st.lists(st.integers(-2, 8), min_size=b, max_size=b))),
             "depth": torch.rand(b, 1, h, w) * draw(st.sampled_from([1.0, 10.0, -1.0])),
             "normals": torch.nn.functional.normalize(torch.randn(b, 3, h, w), dim=1),
             "has": {t: torch.tensor(draw(st.lists(st.booleans(), min_size=b, max_size=b)))
                     for t in ("detection", "scene", "depth", "normals")}}
    if draw(st.booleans()):
        batch["depth"].view(-1)[draw(st.integers(0, batch["depth"].numel() - 1))] = draw(VALUES)
    for key in draw(st.lists(st.sampled_from(["boxes", "labels", "scene", "depth", "normals", "image"]),
                             max_size=2)):
        mutation = draw(st.sampled_from(["drop", "short", "float"]))
        if mutation == "drop":
            batch.pop(key, None)
        elif mutation == "short" and isinstance(batch.get(key), (list, torch.Tensor)):
            batch[key] = batch[key][:1]
        elif isinstance(batch.get(key), torch.Tensor):
            batch[key] = batch[key].double() + 0.5
    return batch


@FUZZ
@given(batch=batches())
def test_fuzz_model_losses(model, batch):
    model.train()
    outputs = model(torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0)))
    try:
        losses = model.losses(outputs, batch)
    except Exception as exc:  # noqa: BLE001
        assert _clear(exc), repr(exc)
        return
    assert set(losses) == {"detection", "scene", "depth", "normals"}
    for name, loss in losses.items():
        assert loss.dim() == 0 and math.isfinite(float(loss.detach())), (name, loss)
    # accepted boxes were usable: finite, not inverted, inside the image (1 px of tolerance)
    used = batch["has"]["detection"].tolist()
    for keep, boxes in zip(used, batch["boxes"]):
        if keep and boxes.numel():
            assert bool(torch.isfinite(boxes).all())
            assert bool((boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all())
            assert float(boxes.min()) >= -1.0 and float(boxes[:, 2].max()) <= 49 and float(boxes[:, 3].max()) <= 33
    if "scene" in batch and bool(batch["has"]["scene"].any()):
        used_scenes = batch["scene"][batch["has"]["scene"]]
        assert int(used_scenes.min()) >= 0 and int(used_scenes.max()) < 6
