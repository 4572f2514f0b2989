"""CUDA checks of the gradient step (issue 17), in one short run.

1. ``device``: the three-task model of tests/_gradient_fakes.py trained on
   CUDA (float32) ends where the same run on the CPU ends, per method and
   place (every tensor the step makes is on the right device).
2. ``fp16``: the synthetic ROCK model (random data of the synthetic shapes,
   120x160, batch 16) trains with float16 autocast and the trainer's
   GradScaler, per method: finite weights, steps taken, overflows skipped.
3. ``bf16``: the same with bfloat16 autocast.
4. ``overflow``: a task whose gradient is NaN under the GradScaler: every
   step is skipped, nothing moves, the scale halves each step.
5. ``time``: step time per method against ``fixed`` on ROCK, bf16, batch 16.

Run: ``python3 benchmarks/gpu/gradient_step.py --out DIR`` (``--device cpu``
runs the same code on the CPU, as a dry run: float16 autocast becomes
bfloat16 there and no GradScaler is built). Writes ``DIR/gradient_step.json``
and prints one line per check.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from _datasets import ListDataset  # noqa: E402
from _gradient_fakes import GRAD_CFG, grad_parts  # noqa: E402
from mtlkit.data import collate  # noqa: E402
from mtlkit.engine.hooks import HookBase  # noqa: E402
from mtlkit.engine.runtime import run_config  # noqa: E402
from mtlkit.engine.trainer import Trainer  # noqa: E402

ROCK = os.path.join(ROOT, "configs", "synthetic", "rock.yaml")
METHODS = [("gcs", "representation"), ("gcs", "parameters"), ("pcgrad", "representation"),
           ("mgda", "parameters"), ("olaux", "representation"), ("famo", None), ("rlw", None)]


def rooms_like(n, height=120, width=160, seed=0):
    """Random samples with the synthetic rooms' keys, shapes and ranges."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x0 = torch.rand(2, generator=g) * width * 0.5
        y0 = torch.rand(2, generator=g) * height * 0.5
        boxes = torch.stack([x0, y0, x0 + width * 0.3, y0 + height * 0.3], 1)
        normals = torch.nn.functional.normalize(torch.randn(3, height, width, generator=g), dim=0)
        out.append({
            "image": torch.rand(3, height, width, generator=g), "boxes": boxes,
            "labels": torch.randint(1, 12, (2,), generator=g), "scene": torch.randint(0, 6, (), generator=g),
            "depth": 0.5 + 4 * torch.rand(1, height, width, generator=g),
            "depth_mask": torch.ones(1, height, width, dtype=torch.bool), "normals": normals,
            "normals_mask": torch.ones(1, height, width, dtype=torch.bool),
            "has": {"detection": True, "scene": True, "depth": True, "normals": True},
            "meta": {"id": i, "source": "random", "orig_size": (height, width)}})
    return out


def weighting(name, place, **extra):
    options = dict(extra)
    if name in ("pcgrad", "rlw"):
        options["seed"] = 0
    if place:
        options["place"] = place
    if not options:
        return f"model.weighting={name}"
    return "model.weighting={" + ", ".join([f"name: {name}"] + [f"{k}: {v}" for k, v in options.items()]) + "}"


class Records(HookBase):
    def before_train(self):
        self.times = []

    def before_step(self):
        if self.state.device.type == "cuda":
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def after_step(self):
        if self.state.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)


def rock_run(device, name, place, amp, iters, samples, out):
    overrides = [weighting(name, place), f"train.device={device}", f"train.iters={iters}", "data.val=null",
                 "data.test=null", "data.num_workers=0", "train.progress=false", "train.eval_at_end=false",
                 "train.plots=false", "train.log_every=1", "train.num_threads=0",
                 "train.schedule.warmup_iters=0"]
    overrides += ["train.amp=false"] if amp is None else ["train.amp=true", f"train.amp_dtype={amp}"]
    hook = Records()
    trainer = Trainer(run_config(ROCK, overrides), out, train_dataset=ListDataset(samples), collate_fn=collate,
                      hooks=[hook])
    trainer.run()
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return trainer, hook, [r for r in records if r["event"] == "weighting"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing checked")
        return 0
    fp16 = "float16" if device == "cuda" else "bfloat16"
    results = []

    def check(item, fn):
        t0 = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as exc:  # a failing check is a row, the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=3)[-600:]}"
        results.append({"item": item, "ok": ok, "detail": detail, "seconds": time.perf_counter() - t0})
        print(f"{'PASS' if ok else 'FAIL'} {item}: {detail}", flush=True)
        with open(os.path.join(args.out, "gradient_step.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                       "torch": torch.__version__, "results": results}, f, indent=1)

    tmp = tempfile.mkdtemp()
    runs = iter(range(10_000))

    def fresh():
        return os.path.join(tmp, f"run{next(runs)}")

    # 1. CUDA float32 == CPU float32 on the fake model
    for name, place in METHODS:
        def same_as_cpu(name=name, place=place):
            options = {"place": place} if place else {}
            if name in ("pcgrad", "rlw"):
                options["seed"] = 0
            finals = []
            for dev in ("cpu", device):
                cfg = copy.deepcopy(GRAD_CFG)
                cfg["train"].update(device=dev, iters=4)
                t = Trainer(run_config(cfg, []), fresh(), **grad_parts(name, **options))
                t.run()
                finals.append({k: v.detach().cpu() for k, v in t.state.core.state_dict().items()})
            worst = max(float((a - finals[1][k]).abs().max()) for k, a in finals[0].items() if a.is_floating_point())
            return worst < 1e-4, f"max |cpu - {device}| = {worst:.2e}"
        check(f"device {name}@{place or 'loss'}", same_as_cpu)

    samples = rooms_like(64)
    # 2. / 3. fp16 + GradScaler and bf16 on ROCK
    for amp in (fp16, "bfloat16"):
        for name, place in [("fixed", None)] + METHODS:
            def trains(name=name, place=place, amp=amp):
                trainer, _, recs = rock_run(device, name, place, amp, 12, samples, fresh())
                state = trainer.state
                finite = all(torch.isfinite(v).all() for v in state.core.state_dict().values()
                             if v.is_floating_point())
                skipped = sum(1 for r in recs if r["skipped"])
                scale = state.scaler.get_scale() if state.scaler is not None else None
                taken = len(recs) - skipped if recs else None
                ok = finite and (name == "fixed" or (len(recs) == 12 and taken >= 6))
                return ok, f"finite={finite} steps={len(recs)} skipped={skipped} scale={scale}"
            check(f"{amp} rock {name}@{place or 'loss'}", trains)

    # 4. overflow: NaN task gradient under the scaler (CUDA float16 only)
    if device == "cuda":
        def overflow():
            cfg = copy.deepcopy(GRAD_CFG)
            cfg["train"].update(device="cuda", iters=3, amp=True, amp_dtype="float16")
            t = Trainer(run_config(cfg, []), fresh(), **grad_parts("gcs", nan_gradient="rec"))
            before = {k: v.clone() for k, v in t._model.state_dict().items()}
            t.run()
            after = t.state.core.state_dict()
            still = all(torch.equal(before[k].cuda(), after[k]) for k in before if k.startswith("backbone"))
            scale = t.state.scaler.get_scale()
            return still and scale == 2.0 ** 13, f"weights unchanged={still}, scale {scale:g} (65536 halved 3x)"
        check("fp16 overflow skip", overflow)

    # 5. step time on ROCK, bf16
    times = {}
    for name, place in [("fixed", None), ("gcs", "representation"), ("gcs", "parameters"),
                        ("mgda", "representation"), ("pcgrad", "parameters"), ("famo", None)]:
        label = f"{name}@{place or 'loss'}"

        def timed(name=name, place=place, label=label):
            _, hook, _ = rock_run(device, name, place, "bfloat16", 13, samples, fresh())
            times[label] = statistics.median(hook.times[3:])
            base = times.get("fixed@loss")
            ratio = times[label] / base if base else 1.0
            return True, f"{1000 * times[label]:.1f} ms/step, x{ratio:.2f} vs fixed"
        check(f"time {label}", timed)
    failed = [r["item"] for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
