"""MultiBox loss: hard negative mining, normalisation, per-sample masking."""

import pytest
import torch
import torch.nn.functional as F

from mtlkit import ops
from mtlkit.errors import DataError
from mtlkit.models.ssd import make_priors, multibox_loss
from mtlkit_plugins.detection import DetectionTask


def _manual(loc, conf, loc_t, labels, ratio=3, min_neg=3, mask=None):
    """Straightforward per-image reference of the MultiBox loss."""
    B = conf.shape[0]
    total_pos, loc_sum, conf_sum, negs = 0, 0.0, 0.0, []
    for i in range(B):
        if mask is not None and not mask[i]:
            negs.append(0)
            continue
        ce = F.cross_entropy(conf[i], labels[i], reduction="none")
        pos = labels[i] > 0
        n_pos = int(pos.sum())
        neg_losses = sorted(ce[~pos].tolist(), reverse=True)
        k = min(max(ratio * n_pos, min_neg), len(neg_losses))
        negs.append(k)
        total_pos += n_pos
        conf_sum += float(ce[pos].sum()) + sum(neg_losses[:k])
        loc_sum += float(F.smooth_l1_loss(loc[i][pos], loc_t[i][pos], reduction="sum"))
    n = max(total_pos, 1)
    return (loc_sum + conf_sum) / n, negs


def _random_case(B=2, P=40, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(B, P, 4, generator=g)
    conf = torch.randn(B, P, C + 1, generator=g) * 3
    loc_t = torch.randn(B, P, 4, generator=g)
    labels = torch.zeros(B, P, dtype=torch.int64)
    return loc, conf, loc_t, labels


def test_hard_negative_mining_is_exactly_3_to_1_and_picks_the_hardest():
    loc, conf, loc_t, labels = _random_case()
    labels[0, [0, 1]] = torch.tensor([1, 2])
    labels[1, 5] = 3
    out = multibox_loss(loc, conf, loc_t, labels)
    expected, negs = _manual(loc, conf, loc_t, labels)
    assert negs == [6, 3]
    assert int(out["num_pos"]) == 3 and int(out["num_neg"]) == 9
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_mining_picks_negatives_by_background_loss():
    loc, conf, loc_t, labels = _random_case(B=1, P=12, C=1)
    labels[0, 0] = 1
    conf.zero_()
    hard = [3, 7, 11]  # these negatives predict "object": high background loss
    conf[0, hard, 1] = 5.0
    conf[0, 0, 1] = 5.0  # the positive is right: small loss
    out = multibox_loss(loc, conf, loc_t, labels)
    ce_hard = F.cross_entropy(torch.tensor([[0.0, 5.0]]), torch.tensor([0])).item()
    ce_pos = F.cross_entropy(torch.tensor([[0.0, 5.0]]), torch.tensor([1])).item()
    smooth = F.smooth_l1_loss(loc[0, 0], loc_t[0, 0], reduction="sum").item()
    assert out["conf"].item() == pytest.approx(ce_pos + 3 * ce_hard, rel=1e-5)
    assert out["loc"].item() == pytest.approx(smooth, rel=1e-5)


def test_negatives_capped_by_availability_and_min_negatives_without_positives():
    loc, conf, loc_t, labels = _random_case(B=3, P=6)
    labels[0, :2] = 1  # wants 6 negatives, only 4 exist
    # image 1: no positive -> min_negatives; image 2: no positive either
    out = multibox_loss(loc, conf, loc_t, labels, min_negatives=2)
    expected, negs = _manual(loc, conf, loc_t, labels, min_neg=2)
    assert negs == [4, 2, 2] and int(out["num_neg"]) == 8
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    none = multibox_loss(loc, conf, loc_t, labels, min_negatives=0)
    assert int(none["num_neg"]) == 4


def test_no_positive_anywhere_is_finite_and_divides_by_one():
    loc, conf, loc_t, labels = _random_case(B=2, P=10)
    out = multibox_loss(loc, conf, loc_t, labels)
    expected, negs = _manual(loc, conf, loc_t, labels)
    assert negs == [3, 3] and out["loc"].item() == 0.0
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)  # sum of 6 CE terms / 1


def test_normalised_by_positives_over_the_batch():
    loc, conf, loc_t, labels = _random_case(B=1)
    labels[0, [2, 9, 17]] = 1
    one = multibox_loss(loc, conf, loc_t, labels)["loss"]
    two = multibox_loss(*(torch.cat([t, t]) for t in (loc, conf, loc_t, labels)))["loss"]
    assert two.item() == pytest.approx(one.item(), rel=1e-6)


def test_loc_weight_scales_only_localisation():
    loc, conf, loc_t, labels = _random_case()
    labels[:, 3] = 2
    a = multibox_loss(loc, conf, loc_t, labels, loc_weight=1.0)
    b = multibox_loss(loc, conf, loc_t, labels, loc_weight=2.5)
    assert (b["loss"] - a["loss"]).item() == pytest.approx(1.5 * a["loc"].item(), rel=1e-5)


def test_mask_removes_samples():
    loc, conf, loc_t, labels = _random_case(B=2)
    labels[0, 4] = 1
    labels[1, [1, 2]] = 2
    mask = torch.tensor([True, False])
    out = multibox_loss(loc, conf, loc_t, labels, mask=mask)
    alone = multibox_loss(loc[:1], conf[:1], loc_t[:1], labels[:1])
    assert out["loss"].item() == pytest.approx(alone["loss"].item(), rel=1e-6)
    assert int(out["num_neg"]) == 3


def test_all_masked_is_exact_zero_with_finite_zero_grads():
    loc, conf, loc_t, labels = _random_case()
    labels[:, :5] = 1
    loc.requires_grad_(True)
    conf.requires_grad_(True)
    out = multibox_loss(loc, conf, loc_t, labels, mask=torch.tensor([False, False]))
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad
    out["loss"].backward()
    assert torch.equal(loc.grad, torch.zeros_like(loc)) and torch.equal(conf.grad, torch.zeros_like(conf))


# -- through the task: pixel boxes, ssd_match, has ------------------------------


PRIORS = make_priors([(4, 4), (2, 2), (1, 1)], [[2], [2], [2]], 0.2, 0.9)
P = PRIORS.shape[0]


def _prediction(B, C, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(B, P, 4, generator=g).requires_grad_(requires_grad)
    conf = torch.randn(B, P, C + 1, generator=g).requires_grad_(requires_grad)
    return {"loc": loc, "conf": conf, "priors": PRIORS}


def _batch(has, H=60, W=80):
    return {
        "image": torch.zeros(len(has), 3, H, W),
        "boxes": [torch.tensor([[8.0, 6.0, 40.0, 30.0], [30.0, 20.0, 80.0, 60.0]]),
                  torch.tensor([[0.0, 0.0, 40.0, 60.0]])][: len(has)],
        "labels": [torch.tensor([1, 3]), torch.tensor([2])][: len(has)],
        "has": {"detection": torch.tensor(has)},
    }


def test_task_loss_normalises_pixel_boxes_by_image_size():
    task = DetectionTask("detection", {"num_classes": 3})
    pred, batch = _prediction(2, 3), _batch([True, True])
    scale = torch.tensor([80.0, 60.0, 80.0, 60.0])
    loc_t, lab_t = ops.ssd_match([b / scale for b in batch["boxes"]], batch["labels"], PRIORS,
                                 0.5, (0.1, 0.2))
    assert int((lab_t > 0).sum()) >= 3  # every GT forced onto a prior at least
    expected = multibox_loss(pred["loc"], pred["conf"], loc_t, lab_t)["loss"]
    assert task.loss(pred, batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_task_loss_respects_has():
    task = DetectionTask("detection", {"num_classes": 3})
    pred = _prediction(2, 3)
    masked = task.loss(pred, _batch([True, False]))
    single = task.loss({k: (v[:1] if k != "priors" else v) for k, v in pred.items()}, _batch([True]))
    assert masked.item() == pytest.approx(single.item(), rel=1e-6)
    zero = task.loss(pred, _batch([False, False]))
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.isfinite(pred["loc"].grad).all() and not pred["conf"].grad.any()


def test_task_loss_drops_degenerate_boxes_and_checks_labels():
    task = DetectionTask("detection", {"num_classes": 3})
    pred, batch = _prediction(2, 3), _batch([True, True])
    ref = task.loss(pred, batch).item()
    batch["boxes"][1] = torch.cat([batch["boxes"][1], torch.tensor([[10.0, 10.0, 10.0, 30.0]])])
    batch["labels"][1] = torch.tensor([2, 1])
    loss = task.loss(pred, batch)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ref, rel=1e-6)
    batch["labels"][1] = torch.tensor([2, 4])
    with pytest.raises(ValueError, match="1..3"):
        task.loss(pred, batch)


def test_sync_free_targets_give_the_loss_of_dropping_degenerate_boxes_bit_for_bit():
    """match_iou > 0: degenerate / NaN GT boxes kept and unlabelled samples
    zero-labelled (no host sync per image) give exactly the loss and gradients of
    dropping them (normalised_targets, the match_iou == 0 path)."""
    from mtlkit.models.ssd import device_targets, normalised_targets

    task = DetectionTask("detection", {"num_classes": 3})
    boxes = [torch.tensor([[4.0, 5.0, 30.0, 40.0], [10.0, 10.0, 10.0, 30.0], [50.0, 20.0, 40.0, 35.0],
                           [float("nan"), 1.0, 20.0, 20.0], [40.0, 30.0, 79.0, 59.0]]),
             torch.tensor([[0.0, 0.0, 0.0, 0.0], [20.0, 15.0, 60.0, 50.0]]),
             torch.tensor([[5.0, 5.0, 25.0, 25.0]]),
             torch.zeros(0, 4)]
    labels = [torch.tensor([1, 2, 3, 1, 2]), torch.tensor([3, 1]), torch.tensor([99]),
              torch.zeros(0, dtype=torch.int64)]
    mask = torch.tensor([True, True, False, True])  # sample 2 is unlabelled (and its label out of range)
    batch = {"image": torch.zeros(4, 3, 60, 80), "boxes": boxes, "labels": labels,
             "has": {"detection": mask}}
    g = torch.Generator().manual_seed(5)
    loc = torch.randn(4, PRIORS.shape[0], 4, generator=g, requires_grad=True)
    conf = torch.randn(4, PRIORS.shape[0], 4, generator=g, requires_grad=True)
    # the task's own path (device_targets) on a batch without the boxes it refuses
    # (issue 19: an inverted or NaN box of a labelled sample is bad data, named, not trained on)
    with pytest.raises(DataError, match=r"batch\['boxes'\]\[0\]\[2\] = .*an inverted box"):
        task.loss({"loc": loc, "conf": conf, "priors": PRIORS}, batch)
    clean = [boxes[0][[0, 1, 4]], boxes[1], boxes[2], boxes[3]]
    clean_labels = [labels[0][[0, 1, 4]], labels[1], labels[2], labels[3]]
    new = task.loss({"loc": loc, "conf": conf, "priors": PRIORS}, dict(batch, boxes=clean, labels=clean_labels))
    new.backward()
    grads = loc.grad.clone(), conf.grad.clone()
    loc.grad = conf.grad = None
    nb, nl = normalised_targets(boxes, labels, (60, 80), mask=mask)
    loc_t, lab_t = ops.ssd_match(nb, nl, PRIORS, 0.5, (0.1, 0.2))
    old = multibox_loss(loc, conf, loc_t, lab_t, mask=mask)["loss"]
    old.backward()
    assert torch.equal(new, old)
    assert torch.equal(grads[0], loc.grad) and torch.equal(grads[1], conf.grad)
    # and the sync-free targets with the degenerate / NaN boxes kept give that loss bit for bit
    db, dl = device_targets(boxes, labels, (60, 80), mask=mask)
    assert [b.shape[0] for b in db] == [5, 2, 1, 0] and dl[2].tolist() == [0]
    loc_t, lab_t = ops.ssd_match(db, dl, PRIORS, 0.5, (0.1, 0.2), check_labels=False)
    assert torch.equal(multibox_loss(loc, conf, loc_t, lab_t, mask=mask)["loss"], old)


def test_detection_labels_are_checked_on_labelled_samples_only():
    task = DetectionTask("detection", {"num_classes": 3})
    pred = _prediction(2, 3)
    batch = _batch([True, False])
    batch["labels"][1] = torch.full_like(batch["labels"][1], 7)  # unlabelled: not checked
    assert torch.isfinite(task.loss(pred, batch))
    batch["labels"][0] = torch.tensor([0] + batch["labels"][0].tolist()[1:])
    with pytest.raises(ValueError, match=r"got 0\.\.\d"):
        task.loss(pred, batch)
