"""Stages ``train`` and ``infer``: the paper-scale model (configs/nyuv2/ssd.yaml
and rock.yaml: ResNet-50 with a dilated layer4, 480x640, 7228 priors) on
synthetic rooms held on the device.

``train``: one optimiser step = forward, every task's loss, the weighting,
backward, the config's optimiser (SGD with momentum); no data loading (the
batches are resident) and no augmentation. Per variant (``bf16_cl``: bf16
autocast + channels_last; ``fp32``: float32 NCHW, the reference): images/s
over the timed steps, peak device memory, the host synchronisations of one
step (``torch.cuda.set_sync_debug_mode``; on the CPU too, the calls that
would synchronise, by :func:`common.census_syncs`) with where they happen, and the
time of each phase (forward, losses, backward, optimiser) from device events.
Then the ROCK/SSD time ratio, and rock-pytorch's schedule (30k iterations x
batch 8 = 240k images; 3.3 h on an RTX 2080 Ti) projected from the step rate
against the issue's target (10 minutes: 400 images/s).

``infer``: eval mode, no autograd, batch 1 and 16: images/s of the forward
pass alone and with the detection post-processing (``ssd_postprocess``),
against rock-pytorch's 65.9 (SSD) / 55.8 (ROCK) images/s on an RTX 2080 Ti;
the ROCK/SSD time ratio against the paper's +7 %.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import sys
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import PeakMemory, Results, census_syncs, count_syncs, time_calls, time_loop  # noqa: E402
from profiles import Profile  # noqa: E402
from rooms import render_rooms, resident_batches, workers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {"ssd": os.path.join(ROOT, "configs", "nyuv2", "ssd.yaml"),
           "rock": os.path.join(ROOT, "configs", "nyuv2", "rock.yaml")}

#: rock-pytorch (the paper's public PyTorch code) on an RTX 2080 Ti
ROCK_PYTORCH = {"train_hours": {"ssd": 2.9, "rock": 3.3}, "infer_ips": {"ssd": 65.9, "rock": 55.8},
                "schedule_images": 30_000 * 8}
TARGET_IPS = 400.0  # the target: the 240k-image schedule in 10 minutes
PAPER_ROCK_OVERHEAD = 1.07  # ROCK / SSD inference time in the paper


def load(name: str, profile: Profile) -> Dict[str, Any]:
    from mtlkit.config import run_config

    h, w = profile.image_size
    return run_config(CONFIGS[name], [f"data.image_size=[{h}, {w}]"])


def build(cfg: Dict[str, Any], device: torch.device, channels_last: bool):
    from mtlkit import build_model

    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def precision_settings(precision: str, device: torch.device):
    """(autocast dtype or None, channels_last) of a variant name."""
    amp = torch.bfloat16 if precision.startswith("bf16") else None
    return amp, precision.endswith("_cl")


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def shared_batches(profile: Profile, res: Results):
    device = torch.device(profile.device)
    samples, source = render_rooms(profile.samples, profile.image_size, workers())
    boxes = [int(s["boxes"].shape[0]) for s in samples]
    res.add("data", source, f"{profile.image_size[0]}x{profile.image_size[1]}, batch {profile.batch}, "
            f"{statistics.mean(boxes):.1f} boxes / image", None, source=source, boxes_per_image=boxes)
    return resident_batches(samples, profile.batch, device)


class PhaseTimer:
    """Device events between the phases of a step; medians in seconds."""

    PHASES = ("forward", "losses", "backward", "optimizer")

    def __init__(self, device: torch.device):
        self.on = device.type == "cuda"
        self.steps: List[List[Any]] = []

    def start(self) -> None:
        if self.on:
            self.steps.append([self._event()])

    def mark(self) -> None:
        if self.on:
            self.steps[-1].append(self._event())

    @staticmethod
    def _event():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def medians(self) -> Optional[Dict[str, float]]:
        if not self.on or not self.steps:
            return None
        torch.cuda.synchronize()
        out = {}
        for k, phase in enumerate(self.PHASES):
            out[phase] = statistics.median(s[k].elapsed_time(s[k + 1]) / 1000.0 for s in self.steps)
        return out


def train_variant(res: Results, name: str, precision: str, batches, profile: Profile) -> Optional[float]:
    """Measure one (config, precision); returns images/s (None on failure)."""
    from mtlkit.engine.optim import build_optimizer
    from mtlkit.engine.precision import autocast, to_memory_format

    device = torch.device(profile.device)
    item = f"train {name} {precision}"
    cfg = load(name, profile)
    amp, channels_last = precision_settings(precision, device)
    model = build(cfg, device, channels_last).train()
    optimizer = build_optimizer(model, cfg["train"]["optimizer"])
    timer = PhaseTimer(device)
    last: Dict[str, torch.Tensor] = {}

    def step(i: int, timed: bool = False) -> None:
        batch = batches[i % len(batches)]
        if timed:
            timer.start()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            outputs = model(to_memory_format(batch["image"], channels_last))
            if timed:
                timer.mark()
            losses = model.losses(outputs, batch)
            total, _ = model.weighting(losses)
        if timed:
            timer.mark()
        total.backward()
        if timed:
            timer.mark()
        optimizer.step()
        if timed:
            timer.mark()
        last["total"] = total.detach()

    for i in range(profile.warmup):
        step(i)
    syncs = count_syncs(lambda: step(0), device)
    census = census_syncs(lambda: step(0))
    with PeakMemory(device) as mem:
        seconds = time_loop(lambda i: step(i, timed=True), device, profile.steps)
    loss = float(last["total"])
    images = profile.steps * profile.batch
    ips = images / seconds
    phases = timer.medians()
    parts = [f"{ips:.1f} img/s", f"{seconds / profile.steps * 1e3:.1f} ms/step"]
    if mem.gib is not None:
        parts.append(f"peak {mem.gib:.1f} GiB")
    if syncs is not None:
        parts.append(f"{syncs['count']} host syncs/step")
    parts.append(f"{census['count']} sync calls/step by census")
    res.add(item, ", ".join(parts), f"{profile.steps} timed steps after {profile.warmup}; loss {loss:.3g}",
            ok=math.isfinite(loss), images_per_s=ips, seconds_per_step=seconds / profile.steps,
            peak_gib=mem.gib, syncs=syncs, census=census, phases=phases, loss=loss)
    if phases:
        res.add(f"{item} phases", ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in phases.items()),
                "median per step, device events", None, **phases)
    sites = syncs if syncs and syncs["count"] else census
    if sites["count"]:
        res.add(f"{item} sync sites", "; ".join(f"{k} x{v}" for k, v in sites["where"].items()),
                "innermost mtlkit frame of each " + ("sync" if sites is syncs else "call (census)"), None)
    return ips


def run_train(res: Results, profile: Profile) -> None:
    device = torch.device(profile.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batches = shared_batches(profile, res)
    rates: Dict[str, Dict[str, float]] = {}
    for precision in profile.precisions:
        for name in ("ssd", "rock"):
            if profile.name == "quick" and precision == "fp32" and name == "rock":
                continue  # the quick mode's fp32 reference: SSD only
            try:
                ips = train_variant(res, name, precision, batches, profile)
                if ips:
                    rates.setdefault(precision, {})[name] = ips
            except Exception as exc:  # noqa: BLE001
                res.error(f"train {name} {precision}", exc)
            _free(device)  # the variant's model and optimiser went with its frame
    for precision, r in rates.items():
        if "ssd" in r and "rock" in r:
            ratio = r["ssd"] / r["rock"]
            res.add(f"train ROCK/SSD time ratio {precision}", f"{ratio:.3f}",
                    "rock-pytorch: 3.3 h / 2.9 h = 1.14", None, ratio=ratio)
    best = rates.get("bf16_cl", {}).get("rock")
    if best:
        minutes = ROCK_PYTORCH["schedule_images"] / best / 60
        res.add("rock-pytorch schedule (30k iters x batch 8), projected",
                f"{minutes:.1f} min at {best:.0f} img/s (ROCK, bf16 + channels_last, resident data, "
                "no augmentation)", f"3.3 h on an RTX 2080 Ti; target <= 10 min ({TARGET_IPS:.0f} img/s)",
                ok=(best >= TARGET_IPS) if device.type == "cuda" else None, minutes=minutes, images_per_s=best)


def infer_model(res: Results, name: str, precision: str, images: torch.Tensor, profile: Profile
                ) -> Dict[tuple, float]:
    """Rows of one (config, precision) at each batch size; returns
    {(precision, name, batch): seconds per call with post-processing}."""
    from mtlkit.engine.precision import autocast, to_memory_format

    device = torch.device(profile.device)
    amp, channels_last = precision_settings(precision, device)
    model = build(load(name, profile), device, channels_last).eval()
    task = model.tasks[model.primary]
    size = tuple(images.shape[-2:])
    times = {}
    for b in profile.infer_batches:
        x = to_memory_format(images[:b].contiguous(), channels_last)

        def forward():
            with torch.no_grad(), autocast(device, amp):
                return model(x)

        def detect():
            with torch.no_grad(), autocast(device, amp):
                out = model(x)
            return task.postprocess(out[model.primary], size)

        fwd = time_calls(forward, device, 3 if device.type == "cuda" else 1, profile.infer_reps)
        det = time_calls(detect, device, 2 if device.type == "cuda" else 0, profile.infer_reps)
        syncs = count_syncs(detect, device)
        times[(precision, name, b)] = det["median"]
        ref = ROCK_PYTORCH["infer_ips"][name]
        res.add(f"infer {name} {precision} batch {b}",
                f"{b / fwd['median']:.1f} img/s forward, {b / det['median']:.1f} img/s with "
                f"post-processing" + (f", {syncs['count']} syncs" if syncs else ""),
                f"rock-pytorch {name.upper()} {ref} img/s (RTX 2080 Ti)", None,
                forward_s=fwd["median"], detect_s=det["median"], batch=b, syncs=syncs)
    return times


def run_infer(res: Results, profile: Profile) -> None:
    device = torch.device(profile.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    samples_needed = max(profile.infer_batches)
    batches = shared_batches(profile, res)
    images = torch.cat([b["image"] for b in batches])
    while images.shape[0] < samples_needed:
        images = torch.cat([images, images])
    times: Dict[tuple, float] = {}
    for precision in profile.precisions:
        for name in ("ssd", "rock"):
            try:
                times.update(infer_model(res, name, precision, images, profile))
            except Exception as exc:  # noqa: BLE001
                res.error(f"infer {name} {precision}", exc)
            _free(device)
    for precision in profile.precisions:
        for b in profile.infer_batches:
            if (precision, "ssd", b) in times and (precision, "rock", b) in times:
                ratio = times[(precision, "rock", b)] / times[(precision, "ssd", b)]
                res.add(f"infer ROCK/SSD time ratio {precision} batch {b}", f"{ratio:.3f}",
                        f"paper: {PAPER_ROCK_OVERHEAD:.2f} (+7 %)", None, ratio=ratio)
