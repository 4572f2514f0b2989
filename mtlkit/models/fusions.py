"""Built-in fusions: residual (ROCK), concat, gated, none (flat MTL).

Registered by ``mtlkit_plugins.fusions``. See :mod:`mtlkit.fusion` for the
interface and :class:`mtlkit.models.rock.RockBlock` for the block that calls them.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.fusion import Fusion, PostNorm


class ResidualFusion(Fusion):
    """ROCK: X~ = ReLU(BN(X + sum_t Dec_t)).

    The decoded maps are added one by one into a single buffer (never one
    C-channel map per task held at once).

    Options:

    * ``post_norm`` (bool, true): BN + ReLU after the sum.
    * ``scale_init`` (float or null, null): with a number, the decoded sum is
      multiplied by a learned scalar starting there, X~ = X + a * sum_t Dec_t
      (``0.0``: the block starts as the identity on X, as zero-initialised
      residual branches do, so pre-trained features reach the head unchanged
      at first).
    """

    defaults = {"post_norm": True, "scale_init": None}

    def __init__(self, channels, names, **options):
        super().__init__(channels, names, **options)
        self.post = PostNorm(channels) if self.options["post_norm"] else None
        init = self.options["scale_init"]
        self.scale = None if init is None else nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor, decoded: Iterator[Tuple[str, torch.Tensor]]) -> torch.Tensor:
        if self.scale is not None:
            decoded = ((name, d * self.scale) for name, d in decoded)
        out = None
        reuse = not torch.is_grad_enabled()  # no autograd: the decoded maps are scratch
        for _, d in decoded:
            # The first map becomes the accumulator (in place when no autograd
            # needs it, else x + d); later maps are added in place.
            if out is None:
                out = d.add_(x) if reuse else x + d
            else:
                out.add_(d)
        if out is None:
            out = x
        if self.post is None:
            return out
        return self.post(out, inplace=out is not x)


class ConcatFusion(Fusion):
    """X~ = ReLU(BN(W [X, Dec_1, ..., Dec_T])) with W a 1x1 conv to C channels.

    The concatenation is never materialised: W is split into one C x C block
    per input and the blocks' outputs are accumulated (same arithmetic).

    Options:

    * ``merge`` ("each"): "each" concatenates X with every decoded map
      ((T+1)·C -> C); "sum" concatenates X with their sum (2C -> C, cheaper).
    * ``post_norm`` (bool, true): BN + ReLU after the 1x1 conv.
    """

    defaults = {"merge": "each", "post_norm": True}
    choices = {"merge": ("each", "sum")}

    def __init__(self, channels, names, **options):
        super().__init__(channels, names, **options)
        inputs = 1 + (len(self.names) if self.options["merge"] == "each" else 1)
        self.proj = nn.Conv2d(inputs * channels, channels, 1, bias=not self.options["post_norm"])
        self.post = PostNorm(channels) if self.options["post_norm"] else None

    def forward(self, x: torch.Tensor, decoded: Iterator[Tuple[str, torch.Tensor]]) -> torch.Tensor:
        c = self.channels
        weight = self.proj.weight
        out = F.conv2d(x, weight[:, :c], self.proj.bias)
        if self.options["merge"] == "each":
            for i, (_, d) in enumerate(decoded, start=1):
                out = out + F.conv2d(d, weight[:, i * c:(i + 1) * c])
        else:
            total = None
            for _, d in decoded:
                total = d if total is None else total + d
            if total is not None:
                out = out + F.conv2d(total, weight[:, c:])
        return out if self.post is None else self.post(out, inplace=True)


class GatedFusion(Fusion):
    """X~ = ReLU(BN(X + sum_t sigmoid(g_t) * Dec_t)).

    Options:

    * ``gate`` ("channel"): "channel" learns one gate logit per channel and
      decoded map (initialised at ``init``); "pixel" predicts a per-pixel gate
      logit from each decoded map with a 1x1 conv C -> 1 (bias ``init``).
    * ``init`` (float, 0.0): initial gate logit (sigmoid(0) = 0.5).
    * ``post_norm`` (bool, true): BN + ReLU after the sum.
    """

    defaults = {"gate": "channel", "init": 0.0, "post_norm": True}
    choices = {"gate": ("channel", "pixel")}

    def __init__(self, channels, names, **options):
        super().__init__(channels, names, **options)
        gate = self.options["gate"]
        init = float(self.options["init"])
        if gate == "channel":
            self.gates = nn.ParameterDict(
                {n: nn.Parameter(torch.full((1, channels, 1, 1), init)) for n in self.names})
        else:  # "pixel" (the choices are checked by the config)
            self.gates = nn.ModuleDict({n: nn.Conv2d(channels, 1, 1) for n in self.names})
            for conv in self.gates.values():
                nn.init.zeros_(conv.weight)
                nn.init.constant_(conv.bias, init)
        self.post = PostNorm(channels) if self.options["post_norm"] else None

    def forward(self, x: torch.Tensor, decoded: Iterator[Tuple[str, torch.Tensor]]) -> torch.Tensor:
        out = x
        for name, d in decoded:
            g = self.gates[name]
            logits = g if isinstance(g, torch.Tensor) else g(d)
            out = out + torch.sigmoid(logits) * d
        if self.post is None:
            return out
        return self.post(out, inplace=out is not x)


class NoFusion(Fusion):
    """Flat multi-task learning: X~ = X. The auxiliary heads are trained, but
    their features are not fed back, so the detection loss does not reach
    them, and the auxiliary losses reach the backbone only through the heads.
    """

    uses_decoded = False

    def forward(self, x: torch.Tensor, decoded: Iterator[Tuple[str, torch.Tensor]]) -> torch.Tensor:
        return x
