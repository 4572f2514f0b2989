"""The SSD MultiBox loss: Smooth-L1 on positives + cross-entropy with hard negative mining."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F


def normalised_targets(boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                       image_size, mask: Optional[torch.Tensor] = None, device=None):
    """Ground truth for ``mtlkit.ops.ssd_match``: pixel xyxy boxes -> [0, 1]
    by the image size (H, W), float32 on ``device``.

    Degenerate boxes (zero or negative width/height) are dropped so no target
    is infinite; samples with ``mask[i] == False`` get no boxes (their priors
    are all background and the loss ignores them anyway).
    Returns (list of (N_i, 4) float32, list of (N_i,) int64).
    """
    h, w = float(image_size[0]), float(image_size[1])
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
    out_boxes, out_labels = [], []
    for i, (b, l) in enumerate(zip(boxes, labels)):
        b = torch.as_tensor(b).to(device=device, dtype=torch.float32).reshape(-1, 4)
        l = torch.as_tensor(l).to(device=device, dtype=torch.int64).reshape(-1)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        if mask is not None and not bool(mask[i]):
            keep = torch.zeros_like(keep)
        out_boxes.append(b[keep] / scale)
        out_labels.append(l[keep])
    return out_boxes, out_labels


def device_targets(boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], image_size,
                   mask: Optional[torch.Tensor] = None, device=None):
    """Ground truth for ``mtlkit.ops.ssd_match`` without a host synchronisation:
    pixel xyxy boxes -> [0, 1] by the image size (H, W), float32 on ``device``.

    Unlike :func:`normalised_targets` nothing is dropped (dropping boxes by
    value is a boolean index, one host sync per image on a GPU):

    * degenerate boxes (zero or negative width/height, NaN) are kept: their IoU
      with every prior is 0, so for a match threshold > 0 ``ssd_match`` never
      matches nor forces them and the targets are those of dropping them (the
      caller keeps :func:`normalised_targets` for a threshold of 0);
    * samples with ``mask[i] == False`` keep their boxes with labels 0
      (background: a loss masked by the same ``mask`` ignores them anyway).

    Copies to ``device`` do not wait (``non_blocking``). Returns (list of
    (N_i, 4) float32, list of (N_i,) int64); labels may hold 0, so call
    ``ssd_match(..., check_labels=False)`` after checking the labelled ones.
    """
    h, w = float(image_size[0]), float(image_size[1])
    scale = torch.tensor([w, h, w, h], dtype=torch.float32).to(device, non_blocking=True)
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool).to(device, non_blocking=True)
    out_boxes, out_labels = [], []
    for i, (b, l) in enumerate(zip(boxes, labels)):
        b = torch.as_tensor(b).to(device=device, dtype=torch.float32, non_blocking=True).reshape(-1, 4)
        l = torch.as_tensor(l).to(device=device, dtype=torch.int64, non_blocking=True).reshape(-1)
        if mask is not None:
            l = l * mask[i]
        out_boxes.append(b / scale)
        out_labels.append(l)
    return out_boxes, out_labels


def multibox_loss(
    loc: torch.Tensor,
    conf: torch.Tensor,
    loc_targets: torch.Tensor,
    labels: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    neg_pos_ratio: float = 3.0,
    min_negatives: int = 3,
    loc_weight: float = 1.0,
) -> Dict[str, torch.Tensor]:
    """MultiBox loss of a batch, from matched targets.

    :param loc: (B, P, 4) predicted offsets.
    :param conf: (B, P, C+1) class logits, 0 = background.
    :param loc_targets: (B, P, 4) encoded targets (``mtlkit.ops.ssd_match``).
    :param labels: (B, P) int64 matched labels, 0 = background.
    :param mask: (B,) bool, which samples carry detection labels (``None``: all).
    :param neg_pos_ratio: negatives kept per positive, per image.
    :param min_negatives: negatives kept in an image with fewer than
        ``min_negatives / neg_pos_ratio`` positives, in particular in a
        labelled image without any object (so empty scenes still teach
        "background"); always capped by the number of negatives available.
    :param loc_weight: weight of the localisation term.

    Per labelled image i with n_i positives: the negatives (priors of label 0)
    are ranked by their cross-entropy (the background loss) and the
    ``min(max(neg_pos_ratio * n_i, min_negatives), #negatives)`` hardest are
    kept (ties: lower prior index first). Loss = (loc_weight * SmoothL1 over
    positives + CE over positives and kept negatives) / max(1, sum_i n_i).
    Unlabelled samples contribute nothing; a batch without any labelled sample
    gives an exact 0 still connected to the graph.

    Returns ``{"loss", "loc", "conf"}`` (scalars, the last two already divided
    by the number of positives), plus ``"num_pos"`` and ``"num_neg"`` (int64).
    """
    B, P, _ = conf.shape
    labels = labels.to(conf.device)
    if mask is None:
        mask = torch.ones(B, dtype=torch.bool, device=conf.device)
    mask = mask.to(device=conf.device, dtype=torch.bool).view(B, 1)
    pos = (labels > 0) & mask  # (B, P)
    num_pos = pos.sum(1)  # (B,)

    conf32 = conf.float()
    ce = F.cross_entropy(conf32.reshape(-1, conf32.shape[-1]), labels.reshape(-1),
                         reduction="none").view(B, P)

    # Hard negative mining: rank background priors by their loss, positives last.
    with torch.no_grad():
        rank_loss = ce.detach().masked_fill(pos | (labels > 0), float("-inf"))
        order = rank_loss.sort(dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(P, device=conf.device).expand(B, P))
        available = (labels == 0).sum(1)
        wanted = torch.clamp((neg_pos_ratio * num_pos.to(torch.float64)).floor().to(torch.int64),
                             min=int(min_negatives))
        num_neg = torch.minimum(wanted, available) * mask.view(B).to(torch.int64)
        neg = rank < num_neg.view(B, 1)

    denom = num_pos.sum().clamp(min=1).to(conf32.dtype)
    loc_loss = F.smooth_l1_loss(loc.float()[pos], loc_targets.to(loc.device).float()[pos],
                                reduction="sum", beta=1.0)
    # masked_fill (not a product) so an unselected prior can never inject NaN;
    # both terms stay connected to the graph when they select nothing.
    conf_loss = ce.masked_fill(~(pos | neg), 0.0).sum()
    loc_loss, conf_loss = loc_loss / denom, conf_loss / denom
    total = loc_weight * loc_loss + conf_loss
    return {"loss": total, "loc": loc_loss.detach(), "conf": conf_loss.detach(),
            "num_pos": num_pos.sum(), "num_neg": num_neg.sum()}
