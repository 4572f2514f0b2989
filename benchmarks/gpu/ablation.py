"""Stage ``ablation`` (``run.sh --ablation``): the paper's four rows (SSD, flat
MTL, intensive pooling, ROCK) with the ResNet-50 configs of configs/nyuv2 on
synthetic rooms at 480x640, a short schedule, 2 seeds, all runs sharing the
GPU (``mtlkit ablate --jobs``). What it measures is the wall time of the
whole ablation against the CPU demo's 15 minutes; with no ImageNet weights
(nothing is downloaded) and a schedule of minutes the mAP figures are a
smoke test of the GPU path, not a result.

The synthetic world has 11 object classes and 6 scene types: the heads are
sized to it (the trainer checks the data's classes against the model's).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from common import Results
from profiles import Profile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = "ssd,flat_mtl,intensive_pooling,rock"


def overrides(profile: Profile) -> list:
    h, w = profile.image_size
    split = "{{type: synthetic, split: {}, size: {}, seed: 0, image_size: [{}, {}]}}"
    out = [f"data.train={split.format('train', profile.ablation_train_size, h, w)}",
           f"data.val={split.format('val', 2, h, w)}",
           f"data.test={split.format('test', profile.ablation_test_size, h, w)}",
           f"data.image_size=[{h}, {w}]", f"data.batch_size={profile.batch}",
           "model.tasks.detection.num_classes=11", "model.tasks.detection.class_names=null",
           "train.optimizer={name: adamw, lr: 0.002, weight_decay: 0.0001}",
           f"train.schedule={{name: cosine, warmup_iters: {max(1, profile.ablation_iters // 10)}}}",
           "train.amp=true", "train.amp_dtype=bfloat16", "train.channels_last=true",
           f"train.log_every={max(1, profile.ablation_iters // 5)}", f"train.device={profile.device}"]
    return out


def command(profile: Profile, out_dir: str) -> list:
    cmd = [sys.executable, "-m", "mtlkit", "ablate", os.path.join(ROOT, "configs", "nyuv2"), "--out", out_dir,
           "--rows", ROWS, "--seeds", *[str(s) for s in profile.ablation_seeds],
           "--iters", str(profile.ablation_iters), "--jobs", str(profile.ablation_jobs), "--no-progress"]
    for o in overrides(profile):
        cmd += ["-o", o]
    return cmd


def run(res: Results, profile: Profile, work_dir: str, limit: float) -> None:
    out_dir = os.path.join(work_dir, "ablation")
    cmd = command(profile, out_dir)
    start = time.time()
    # its own process group: the runs it starts are stopped with it at the limit
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=max(1.0, limit))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        print((log or "")[-4000:], flush=True)
        res.add("ablation", f"timed out after {time.time() - start:.0f} s", f"limit {limit:.0f} s", False)
        return
    wall = time.time() - start
    print((log or "")[-4000:], flush=True)
    if proc.returncode != 0:
        last = log.strip().splitlines()[-1] if (log or "").strip() else ""
        res.add("ablation", f"failed (exit {proc.returncode}) after {wall:.0f} s: {last}", ok=False, wall_s=wall)
        return
    with open(os.path.join(out_dir, "ablation.json"), encoding="utf-8") as handle:
        table = json.load(handle)
    runs = table.get("runs", [])
    res.add("ablation wall time", f"{wall:.0f} s for {len(runs)} runs ({ROWS}; seeds "
            f"{' '.join(map(str, profile.ablation_seeds))}; {profile.ablation_iters} iters x batch "
            f"{profile.batch} at {profile.image_size[0]}x{profile.image_size[1]}; {profile.ablation_jobs} jobs)",
            "CPU demo: 15 min (configs/synthetic, 120x160)", None, wall_s=wall)
    for model in ROWS.split(","):
        mine = [r for r in runs if r.get("model") == model]
        if not mine:
            continue
        ap50 = [100 * float(r.get("AP50", float("nan"))) for r in mine]
        ips = [r.get("images_per_s") for r in mine if r.get("images_per_s")]
        res.add(f"ablation {model}", f"AP50 {', '.join(f'{v:.1f}' for v in ap50)}; "
                f"{sum(ips) / len(ips):.0f} img/s per run" if ips else f"AP50 {ap50}",
                "smoke test (no pre-trained weights, short schedule)", None, runs=mine)
