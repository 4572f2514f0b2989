"""The GPU check of issue 18, one stage per subprocess, one table at the end.

    python benchmarks/gpu/bench.py [--mode full|quick|dry] [--stages a,b] [--ablation]
                                   [--budget SECONDS] [--out DIR]

(``benchmarks/gpu/run.sh`` builds the extension first and calls this; see
docs/gpu.md.) Stages, in order: ``env``, ``pytest`` (``pytest -m gpu``),
``ops_exact`` (CUDA = CPU on adversarial inputs), ``ops_speed`` (against
torchvision), ``train`` (the paper-scale training step), ``infer``, and with
``--ablation`` the short ResNet-50 ablation.

Device time is scarce, so: each stage runs in its own process under a time
limit (its own, and what is left of ``--budget``); a stage that runs out is
killed and keeps the rows it wrote; after every stage the merged rows are
written to ``OUT/results.json`` and ``OUT/table.md`` and the stage's rows are
printed; SIGTERM / SIGINT print the table so far. Exit status: 0 when no row
failed, 1 otherwise (2: bad arguments).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from common import Results, write_json_atomic  # noqa: E402
from profiles import PROFILES, STAGES, Profile  # noqa: E402
from report import render_table  # noqa: E402


# ---------------------------------------------------------------------------
# the stages (run in a child process: python bench.py --stage NAME ...)
# ---------------------------------------------------------------------------
def stage_env(res: Results, profile: Profile, work: str, limit: float) -> None:
    import platform

    import torch

    res.add("python / torch", f"{platform.python_version()} / {torch.__version__} (CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()})", "", None, torch=torch.__version__, cuda=torch.version.cuda)
    if profile.device == "cuda":
        ok = torch.cuda.is_available()
        if ok:
            p = torch.cuda.get_device_properties(0)
            res.add("GPU", f"{p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, "
                    f"compute capability {p.major}.{p.minor}", "", True, name=p.name, sm=p.multi_processor_count,
                    gib=p.total_memory / 2**30)
        else:
            res.add("GPU", "none visible to torch", "a CUDA device", False)
        smi = _run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.mem,temperature.gpu",
                    "--format=csv,noheader"])
        if smi:
            res.add("nvidia-smi (driver, SM / memory clock, temperature)", smi, "", None)
    nvcc = _run([os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"), "--version"])
    if nvcc:
        res.add("nvcc", nvcc.strip().splitlines()[-1], "", None)
    build = _read_json(os.path.join(work, "build.json"))
    if build:
        res.add("build of mtlkit._C", f"{'ok' if build.get('ok') else 'FAILED'} in {build.get('seconds')} s",
                build.get("command", ""), bool(build.get("ok")), **build)
    import mtlkit.ops as ops

    cuda_kernels = bool(ops.backend() == "native"
                        and torch._C._dispatch_has_kernel_for_dispatch_key("mtlkit::nms", "CUDA"))
    res.add("mtlkit ops", f"backend {ops.backend()}" + (", CUDA kernels built" if cuda_kernels else ""),
            ops.native_error() or "", ok=(cuda_kernels if profile.device == "cuda" else ops.backend() == "native"))
    for module in ("torchvision", "trimesh", "embreex"):
        try:
            version = getattr(__import__(module), "__version__", "present")
        except Exception as exc:  # noqa: BLE001
            version = f"missing ({type(exc).__name__})"
        res.add(module, str(version), "", None)
    commit = _run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    res.add("mtlkit commit", (commit or "unknown").strip(), "", None)


def stage_pytest(res: Results, profile: Profile, work: str, limit: float) -> None:
    import xml.etree.ElementTree as ET

    tests = os.path.join(ROOT, "tests")
    files = sorted(os.path.join(tests, f) for f in os.listdir(tests)
                   if f.startswith("test_") and f.endswith(".py")
                   and "mark.gpu" in open(os.path.join(tests, f), encoding="utf-8").read())
    xml = os.path.join(work, "pytest-gpu.xml")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           f"--junitxml={xml}", *files]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, limit - 5))
    out = (proc.stdout or "") + (proc.stderr or "")
    print(out[-3000:], flush=True)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if os.path.exists(xml):
        root = ET.parse(xml).getroot()
        for suite in ([root] if root.tag == "testsuite" else list(root)):
            for k in counts:
                counts[k] += int(suite.get(k, 0))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    bad = counts["failures"] + counts["errors"]
    ok = bad == 0 and proc.returncode in (0, 5) and (passed > 0 or profile.device != "cuda")
    res.add(f"pytest -m gpu ({', '.join(os.path.basename(f) for f in files)})",
            f"{passed} passed, {bad} failed, {counts['skipped']} skipped", "all pass on a GPU", ok,
            returncode=proc.returncode, **counts)


def stage_ops_exact(res: Results, profile: Profile, work: str, limit: float) -> None:
    import ops_exact

    ops_exact.run(res, profile)


def stage_ops_speed(res: Results, profile: Profile, work: str, limit: float) -> None:
    import ops_speed

    ops_speed.run(res, profile)


def stage_train(res: Results, profile: Profile, work: str, limit: float) -> None:
    import step

    step.run_train(res, profile)


def stage_infer(res: Results, profile: Profile, work: str, limit: float) -> None:
    import step

    step.run_infer(res, profile)


def stage_gradients(res: Results, profile: Profile, work: str, limit: float) -> None:
    """gradient_step.py (the gradient step's checks: CUDA = CPU per method, fp16 with a GradScaler,
    bf16, the overflow skip, step time per method) in a child process; one row per check."""
    out = os.path.join(work, "gradients")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "gradient_step.py"), "--device", profile.device,
                           "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, limit - 5))
    print(((proc.stdout or "") + (proc.stderr or ""))[-3000:], flush=True)
    path = os.path.join(out, "gradient_step.json")
    checks = json.load(open(path))["results"] if os.path.exists(path) else []
    for check in checks:
        res.add(f"gradient step: {check['item']}", check["detail"], "", check["ok"], seconds=check["seconds"])
    if proc.returncode != 0 and all(c["ok"] for c in checks):
        res.add("gradient step checks", f"exit status {proc.returncode}", "0", False)


def stage_ablation(res: Results, profile: Profile, work: str, limit: float) -> None:
    import ablation

    ablation.run(res, profile, work, limit - 10)


RUNNERS = {"env": stage_env, "pytest": stage_pytest, "ops_exact": stage_ops_exact, "ops_speed": stage_ops_speed,
           "train": stage_train, "infer": stage_infer, "gradients": stage_gradients, "ablation": stage_ablation}


def _run(cmd: List[str]) -> Optional[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def child(args: argparse.Namespace) -> int:
    profile = PROFILES[args.mode]
    if profile.device == "cpu":
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("MTLKIT_GPU_DRY_THREADS", "1"))))
    res = Results(args.stage, args.result)
    res.save()
    try:
        RUNNERS[args.stage](res, profile, args.work, args.limit)
    except Exception as exc:  # noqa: BLE001 - the row says what broke; the driver goes on
        res.error(f"{args.stage} stage", exc)
        return 1
    return 0


# ---------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------
class Driver:
    def __init__(self, args: argparse.Namespace, profile: Profile, stages: List[str]):
        self.args, self.profile, self.stages = args, profile, stages
        self.out, self.work = os.path.abspath(args.out), os.path.abspath(args.work)
        os.makedirs(self.out, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        self.rows: List[Dict[str, Any]] = []
        self.timings: Dict[str, Dict[str, Any]] = {}
        self.started = time.time()
        budget = args.budget if args.budget is not None else profile.budget + (
            profile.stage_limits["ablation"] if "ablation" in stages else 0)
        if args.cap is not None:
            budget = min(budget, args.cap)
        self.deadline = self.started + budget
        self.child: Optional[subprocess.Popen] = None

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._interrupted)
        for stage in self.stages:
            self._stage(stage)
        return self._finish("done")

    def _stage(self, stage: str) -> None:
        left = self.deadline - time.time() - 3
        limit = min(self.profile.stage_limits[stage], left)
        if limit < self.profile.min_stage_seconds:
            self.rows.append({"stage": stage, "item": f"{stage} stage", "result": "skipped: the time budget "
                              f"is spent ({max(0, left):.0f} s left)", "reference": "", "ok": None, "data": {}})
            self.timings[stage] = {"seconds": 0, "status": "skipped"}
            self._write()
            return
        result = os.path.join(self.work, f"stage-{stage}.json")
        if os.path.exists(result):
            os.unlink(result)
        cmd = [sys.executable, os.path.abspath(__file__), "--stage", stage, "--mode", self.profile.name,
               "--result", result, "--work", self.work, "--limit", f"{limit:.0f}"]
        print(f"\n=== stage {stage} (limit {limit:.0f} s) ===", flush=True)
        start, status = time.time(), "ok"
        self.child = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
        try:
            code = self.child.wait(timeout=limit)
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            self._kill_child()
            status = "timed out"
        finally:
            self.child = None
        seconds = time.time() - start
        rows = (_read_json(result) or {}).get("rows", [])
        if status == "timed out":
            rows.append({"stage": stage, "item": f"{stage} stage", "result": f"timed out after {seconds:.0f} s "
                         f"(rows above are what it finished)", "reference": f"limit {limit:.0f} s", "ok": False,
                         "data": {}})
        elif not rows:
            rows.append({"stage": stage, "item": f"{stage} stage", "result": f"no result ({status})",
                         "reference": "", "ok": False, "data": {}})
        self.rows.extend(rows)
        self.timings[stage] = {"seconds": round(seconds, 1), "status": status, "limit": round(limit)}
        self._write()

    def _kill_child(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        try:
            os.killpg(self.child.pid, signal.SIGTERM)
            self.child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            except OSError:
                pass
            self.child.wait()

    def _interrupted(self, signum, frame) -> None:  # noqa: ANN001
        self._kill_child()
        code = self._finish(f"interrupted by {signal.Signals(signum).name}")
        sys.exit(128 + signum if code == 0 else code)

    def _payload(self, state: str) -> Dict[str, Any]:
        return {"mode": self.profile.name, "state": state, "stages": self.stages, "timings": self.timings,
                "seconds": round(time.time() - self.started, 1),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "profile": self.profile.to_dict(), "rows": self.rows}

    def _write(self, state: str = "running") -> str:
        payload = self._payload(state)
        write_json_atomic(os.path.join(self.out, "results.json"), payload)
        table = render_table(payload, full=True)
        tmp = os.path.join(self.out, ".table.md.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(table)
        os.replace(tmp, os.path.join(self.out, "table.md"))
        return render_table(payload, full=False)

    def _finish(self, state: str) -> int:
        table = self._write(state)
        print("\n" + table, flush=True)
        failed = [r for r in self.rows if r.get("ok") is False]
        print(f"mtlkit gpu check: {state}; {len(failed)} failed row(s); results in {self.out}/results.json "
              f"and table.md", flush=True)
        return 1 if failed else 0


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_mode = "dry" if os.environ.get("MTLKIT_GPU_DRY", "") not in ("", "0") else "full"
    parser.add_argument("--mode", choices=sorted(PROFILES), default=default_mode,
                        help="full (the issue's sizes), quick (a cheaper second try), dry (CPU, tiny); "
                             "default: full, or dry when MTLKIT_GPU_DRY=1")
    parser.add_argument("--stages", default=None,
                        help=f"comma-separated stages (default: all but ablation): {', '.join(STAGES)}")
    parser.add_argument("--ablation", action="store_true", help="also run the ablation stage (minutes)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for every stage together (default: the mode's)")
    parser.add_argument("--cap", type=float, default=None,
                        help="at most this many seconds for the stages, whatever the budget (run.sh: what "
                             "is left of the command's total after the build)")
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "runs", "gpu"),
                        help="where results.json and table.md go (default: $OUT, else runs/gpu)")
    parser.add_argument("--work", default=os.environ.get("MTLKIT_GPU_WORK") or "/tmp/mtlkit-gpu",
                        help="scratch folder (stage files, pytest XML, ablation runs)")
    parser.add_argument("--stage", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=600.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    if args.stage:
        return child(args)
    profile = PROFILES[args.mode]
    if args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            print(f"bench.py: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}", file=sys.stderr)
            return 2
    else:
        stages = [s for s in STAGES if s != "ablation"]
    if args.ablation and "ablation" not in stages:
        stages.append("ablation")
    if args.budget is not None and args.budget <= 0:
        print(f"bench.py: --budget must be positive, got {args.budget}", file=sys.stderr)
        return 2
    return Driver(args, profile, stages).run()


if __name__ == "__main__":
    sys.exit(main())
