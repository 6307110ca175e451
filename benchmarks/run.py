#!/usr/bin/env python
"""Speed and memory of pcr as ratios measured side by side in one run.

    python benchmarks/run.py [--model DIR] [--quick] [--repeats N] [--only a,b] [--skip a,b]

Writes benchmarks/results.json and prints a table. Every figure is the median of at least 3
repeats; the things compared are interleaved (A, B, A, B, ...) so load changes on a shared
machine hit both sides, and a ratio is the median of the per-repeat ratios of adjacent runs.

Cases (see benchmarks/README.md):
  calibration_cost  progressive sweep / one FP32 pass (and the official O(T^2) loop on a subset)
  generation        fake-quantized / FP32 sampling time per image
  store             bytes stored per activation element in calib.zarr; write throughput
  memory            peak RSS of the calibrate stage at T=10 / at T=50 (subprocesses)
  cache             `dvc exp run -S relax.fraction=X` / generate + score stages run alone
  scaling           calibration time against prompts and steps, with a fitted exponent

Denormals are flushed (`torch.set_flush_denormal(True)`) in this process: they skew CPU timings of
small models. The stage subprocesses of `memory` and `cache` run as users run them (no flush).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = "data/demo/pipeline"
AFFINE_TARGET = 3.5  # issue 20: calibration with the new objective, in FP32 passes
CASES = ("calibration_cost", "generation", "store", "memory", "cache", "scaling")
TARGETS = {  # case -> (figure key, comparison, target)
    "calibration_cost": ("ratio", "<=", 2.3),  # issue 15
    "generation": ("ratio", "<=", 1.3),
    "store": ("bytes_per_element", "<=", 1.0),
    "memory": ("ratio", "<=", 1.2),
    "cache": ("ratio", "<=", 1.2),
}


# --------------------------------------------------------------------------- helpers


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def interleave(fns: dict[str, Callable[[], object]], repeats: int, warmup: bool = False) -> dict[str, list[float]]:
    """Wall times of each fn, run A, B, C, A, B, C, ... `repeats` times (after one untimed round if warmup)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + int(warmup)):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            if r >= int(warmup):
                times[name].append(dt)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of num[i] / den[i] (adjacent runs, so a load change cancels)."""
    return median([a / b for a, b in zip(num, den, strict=True)])


def paired_ratio_ci(num: list[float], den: list[float], resamples: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of paired_ratio, resampling the rounds."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    rng = random.Random(seed)
    meds = sorted(median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return [meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]]


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """b of y = a * x^b, least squares in log-log."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def machine(threads: int) -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": threads,
            "python": platform.python_version(), "platform": platform.platform(), "flush_denormal": True,
            "load_average_at_start": list(os.getloadavg())}


@dataclass
class Bench:
    model: str
    work: Path
    repeats: int
    threads: int
    quick: bool
    # sizes
    steps: int = 20  # T of the main calibration / generation setup
    prompts: int = 32  # calibration prompts of the main setup
    batch: int = 16
    eval_prompts: int = 16
    naive_steps: int = 25
    naive_prompts: int = 2
    mem_steps: tuple[int, int] = (10, 50)
    mem_prompts: int = 16
    scale_prompts: tuple[int, ...] = (8, 16, 32)
    scale_prompt_steps: int = 10
    scale_steps: tuple[int, ...] = (10, 20, 40)
    scale_step_prompts: int = 4
    cache_steps: int = 10
    cache_prompts: int = 8
    cache_eval: int = 8
    _collected: dict = field(default_factory=dict)
    _prepared: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.quick:
            self.steps, self.prompts, self.batch, self.eval_prompts = 4, 4, 4, 2
            self.naive_steps, self.naive_prompts = 6, 1
            self.mem_steps, self.mem_prompts = (4, 20), 4
            self.scale_prompts, self.scale_prompt_steps = (1, 2, 4), 4
            self.scale_steps, self.scale_step_prompts = (2, 4, 8), 1
            self.cache_steps, self.cache_prompts, self.cache_eval = 4, 4, 4

    # ---- params / stores

    def params_dict(self, steps: int, prompts: int, batch: int | None = None, eval_prompts: int | None = None,
                    objective: str = "ranges", act_bits: int = 8) -> dict:
        batch = batch or self.batch
        eval_n = eval_prompts or self.eval_prompts
        return {
            "model": {"path": str(Path(self.model).resolve()), "steps": steps, "scheduler": "ddim", "device": "cpu"},
            "collect": {"prompts": str(ROOT / "data/prompts/calibration.txt"), "num_prompts": prompts, "batch_size": batch},
            "quant": {"act_bits": act_bits},  # act_observer auto: min/max at 8 bits, MSE search (histograms) below
            "calibrate": {"batch_size": batch, "objective": objective},
            "eval": {"prompts": str(ROOT / "data/prompts/eval.txt"), "paraphrase_prompts": str(ROOT / "data/prompts/eval_paraphrase.txt"),
                     "num_prompts": eval_n, "batch_size": min(batch, eval_n)},
        }

    def params(self, steps: int, prompts: int, **kw):
        from pcr.config import Params

        return Params.from_dict(self.params_dict(steps, prompts, **kw))

    def collect(self, steps: int, prompts: int) -> Path:
        """FP32 trajectories (collect's store) of `prompts` prompts at T=`steps`, once per size."""
        from pcr.collect import collect

        key = (steps, prompts)
        if key not in self._collected:
            out = self.work / f"traj_T{steps}_N{prompts}.zarr"
            collect(self.params(steps, prompts), out, progress=False)
            self._collected[key] = out
        return self._collected[key]

    def prepared(self, steps: int, prompts: int, subset: int | None = None, objective: str = "ranges", act_bits: int = 8):
        """(params, traj store, pipe, calibration) with weights quantized; calibration over `subset` prompts
        (collected on their own: every calibration mode uses every collected prompt) with `objective` at `act_bits`."""
        from pcr.calibrate.run import prepare
        from pcr.stores import open_store

        key = (steps, prompts, subset, objective, act_bits)
        if key not in self._prepared:
            from pcr.config import Params

            p = Params.from_dict(self.params_dict(steps, subset or prompts, objective=objective, act_bits=act_bits))
            path = self.collect(steps, subset or prompts)
            traj = open_store(path, "trajectories")
            pipe, qmap, cal = prepare(p, traj, path)
            self._prepared[key] = (p, traj, pipe, cal)
        return self._prepared[key]


def x_T(traj, n: int):
    import torch

    return torch.from_numpy(traj["x"][0, :n])


def fp32_pass(sampler, cond: dict, x, batch: int):
    """One FP32 pass: T UNet steps over all prompts, batched as collect does, with no store writes."""
    import torch

    from pcr.distributed import batches as split
    from pcr.models.conditioning import select

    batches = split(x.shape[0], batch)
    schedulers = [sampler.new_scheduler() for _ in batches]
    for k in range(sampler.num_steps):
        xs = []
        for b, s in zip(batches, schedulers, strict=True):
            e = sampler.eps(x[b], k, select(cond, b), s)
            xs.append(sampler.step(s, e, k, x[b]).cpu())
        x = torch.cat(xs)
    return x


_fp_samplers: dict = {}


def fp_sampler(b: Bench, steps: int):
    from pcr.sampling import load_sampler

    if steps not in _fp_samplers:
        _fp_samplers[steps] = load_sampler(b.params(steps, 1).model)
    return _fp_samplers[steps]


# --------------------------------------------------------------------------- cases


def case_calibration_cost(b: Bench) -> dict:
    from pcr.calibrate.sweep import naive_progressive, sweep

    # main setup: every calibration prompt at T = b.steps
    p, traj, _, cal = b.prepared(b.steps, b.prompts)
    *_, cal_affine = b.prepared(b.steps, b.prompts, objective="affine")
    *_, cal_a4 = b.prepared(b.steps, b.prompts, objective="affine", act_bits=4)  # the default below 8 bits: MSE ranges
    _, fp = fp_sampler(b, b.steps)
    x0 = x_T(traj, b.prompts)
    t = interleave({"fp32_pass": lambda: fp32_pass(fp, cal.cond, x0, b.batch),
                    "progressive": lambda: sweep(cal, "progressive", x0, progress=False),
                    "progressive_affine": lambda: sweep(cal_affine, "progressive", x0, progress=False),
                    "progressive_affine_a4": lambda: sweep(cal_a4, "progressive", x0, progress=False)},
                   b.repeats, warmup=True)
    ratio = paired_ratio(t["progressive"], t["fp32_pass"])
    # the official loop on a subset at T = naive_steps, beside the sweep and a pass on the same subset
    _, ntraj, _, ncal = b.prepared(b.naive_steps, b.naive_prompts)
    _, nfp = fp_sampler(b, b.naive_steps)
    nx = x_T(ntraj, b.naive_prompts)
    tn = interleave({"fp32_pass": lambda: fp32_pass(nfp, ncal.cond, nx, b.batch),
                     "progressive": lambda: sweep(ncal, "progressive", nx, progress=False),
                     "naive": lambda: naive_progressive(ncal, nx)}, b.repeats)
    T = b.naive_steps
    return {
        "ratio": ratio, "steps": b.steps, "prompts": b.prompts, "batch_size": b.batch,
        "ratio_affine": paired_ratio(t["progressive_affine"], t["fp32_pass"]),  # issue 20: calibrate.objective=affine
        "ratio_affine_a4": paired_ratio(t["progressive_affine_a4"], t["fp32_pass"]),  # ... at A4, where auto searches MSE ranges
        "fp32_pass_s": median(t["fp32_pass"]), "progressive_s": median(t["progressive"]), "times_s": t,
        "naive": {"steps": T, "prompts": b.naive_prompts, "fp32_pass_s": median(tn["fp32_pass"]),
                  "progressive_s": median(tn["progressive"]), "naive_s": median(tn["naive"]),
                  "progressive_passes": paired_ratio(tn["progressive"], tn["fp32_pass"]),
                  "naive_passes": paired_ratio(tn["naive"], tn["fp32_pass"]),
                  "naive_over_progressive": paired_ratio(tn["naive"], tn["progressive"]),
                  "expected_naive_passes": (T + 1) / 2, "times_s": tn},
    }


def case_generation(b: Bench) -> dict:
    """Sampling with the calibrated fake-quantized UNet of calibration_cost's setup vs the FP32 UNet."""
    from pcr.calibrate.sweep import sweep
    from pcr.config import read_prompts
    from pcr.sampling import conditioning, sample

    p, traj, pipe, cal = b.prepared(b.steps, b.prompts)
    if not all(bool(q.input_quant.calibrated.all()) for q in cal.qlayers.values()):
        sweep(cal, "progressive", x_T(traj, b.prompts), progress=False)
    fpipe, fp = fp_sampler(b, b.steps)
    prompts = read_prompts(ROOT / "data/prompts/eval.txt", b.eval_prompts)
    cond = conditioning(fpipe, prompts, p.model, fp)
    seeds = [1000 + i for i in range(len(prompts))]
    n = len(prompts)
    t = interleave({"fp32": lambda: sample(fp, cond, seeds), "quantized": lambda: sample(cal.sampler, cond, seeds)},
                   b.repeats, warmup=True)
    return {"ratio": paired_ratio(t["quantized"], t["fp32"]), "images": n, "steps": b.steps,
            "fp32_s_per_image": median(t["fp32"]) / n, "quantized_s_per_image": median(t["quantized"]) / n,
            "quantized_layers": len(cal.qlayers), "times_s": t}


def case_store(b: Bench) -> dict:
    """calib.zarr of a real calibrate() run: bytes stored per activation element; write throughput."""
    import numpy as np
    import zarr

    from pcr.calibrate.run import calibrate
    from pcr.stores import add_array, open_store

    d = b.params_dict(b.steps, b.prompts)
    d["calibrate"]["store"] = {"layers": ["down_blocks.0.resnets.0.conv1", "mid_block.attentions.0.proj_in", "*.attn1.to_q"],
                               "samples": 2}
    from pcr.config import Params

    p = Params.from_dict(d)
    out = b.work / "store"
    out.mkdir(exist_ok=True)
    traj = b.collect(b.steps, b.prompts)
    t0 = time.perf_counter()
    calibrate(p, traj, out / "calib.zarr", out / "qparams.safetensors", out / "qconfig.json", out / "activations.zarr", progress=False)
    calibrate_s = time.perf_counter() - t0
    calib = open_store(out / "activations.zarr", "activations")
    arrays = {name: calib[f"activations/{name}"] for name in calib["activations"].array_keys()}
    stored = sum(a.nbytes_stored() for a in arrays.values())
    elements = sum(a.size for a in arrays.values())
    per_array = {name: {"shape": list(a.shape), "dtype": str(a.dtype), "bytes_per_element": a.nbytes_stored() / a.size}
                 for name, a in arrays.items()}
    data = {name: a[:] for name, a in arrays.items()}
    dims = {name: a.metadata.dimension_names for name, a in arrays.items()}
    raw = sum(v.nbytes for v in data.values())

    def write(per_step: bool) -> Callable[[], None]:
        def run() -> None:
            path = out / f"write_{'step' if per_step else 'bulk'}.zarr"
            if path.exists():
                shutil.rmtree(path)
            g = zarr.open_group(str(path), mode="w")
            for name, v in data.items():  # calibrate's layout: one chunk per step, one shard per array
                a = add_array(g, name.replace("/", "_"), v.shape, v.dtype, dims[name], (1, *v.shape[1:]), v.shape)
                if per_step:
                    for k in range(v.shape[0]):
                        a[k] = v[k]
                else:
                    a[:] = v
        return run

    t = interleave({"per_step": write(True), "bulk": write(False)}, b.repeats, warmup=True)
    check = zarr.open_group(str(out / "write_step.zarr"), mode="r")
    assert all(np.array_equal(check[n.replace("/", "_")][:], v) for n, v in data.items())
    mb = raw / 1e6
    return {"bytes_per_element": stored / elements, "elements": int(elements), "bytes_stored": int(stored),
            "fp32_bytes_per_element": 4.0, "arrays": per_array, "uncompressed_mb": mb,
            "write_mb_per_s_per_step": mb / median(t["per_step"]), "write_mb_per_s_bulk": mb / median(t["bulk"]),
            "calibrate_call_s": calibrate_s, "times_s": t}


def _child_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


PEAK_RSS_WRAPPER = """
import runpy, sys
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
    open(out, "w").write(hwm[0].split()[1] if hwm else "")
"""


def run_measured(cmd: list[str], cwd: Path, env: dict, peak_rss: bool = False) -> tuple[float, int | None, str]:
    """(wall s, peak RSS in bytes of the child's own process image, output) of one subprocess.

    The peak is VmHWM read by the child itself at exit (peak_rss=True: `cmd` must be [python, script, ...]).
    Not ru_maxrss of wait4/RUSAGE_CHILDREN: Linux carries the pre-exec high-water mark across exec, so a
    child forked from this (large) process would report this process's RSS.
    """
    rss_file = None
    if peak_rss:
        rss_file = tempfile.NamedTemporaryFile("r", suffix=".rss", delete=False)
        cmd = [cmd[0], "-c", PEAK_RSS_WRAPPER, rss_file.name, *cmd[1:]]
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t
        log.seek(0)
        text = log.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[-6:]))} failed ({proc.returncode}):\n{text[-3000:]}")
    rss = None
    if rss_file is not None:
        value = Path(rss_file.name).read_text().strip()
        os.unlink(rss_file.name)
        rss = int(value) * 1024 if value else None  # VmHWM is in kB
    return wall, rss, text


def case_memory(b: Bench) -> dict:
    import yaml

    out = b.work / "memory"
    out.mkdir(exist_ok=True)
    cmds = {}
    for T in b.mem_steps:
        traj = b.collect(T, b.mem_prompts)
        pfile = out / f"params_T{T}.yaml"
        pfile.write_text(yaml.safe_dump(b.params_dict(T, b.mem_prompts)))
        cmds[T] = [sys.executable, str(ROOT / "stages/calibrate.py"), str(pfile), str(traj), str(out / f"calib_T{T}.zarr"),
                   str(out / f"qparams_T{T}.safetensors"), str(out / f"qconfig_T{T}.json")]
    rss: dict[int, list[int]] = {T: [] for T in b.mem_steps}
    wall: dict[int, list[float]] = {T: [] for T in b.mem_steps}
    for _ in range(b.repeats):
        for T in b.mem_steps:
            w, r, _ = run_measured(cmds[T], out, _child_env(b.threads), peak_rss=True)
            rss[T].append(r)
            wall[T].append(w)
    lo, hi = b.mem_steps
    return {"ratio": paired_ratio(rss[hi], rss[lo]), "steps": list(b.mem_steps), "prompts": b.mem_prompts,
            f"peak_rss_mb_T{lo}": median(rss[lo]) / 2**20, f"peak_rss_mb_T{hi}": median(rss[hi]) / 2**20,
            "rss_bytes": {str(k): v for k, v in rss.items()}, "wall_s": {str(k): v for k, v in wall.items()}}


def _project_copy(b: Bench, root: Path) -> dict:
    """The project in a fresh git repo, the model copied in, small params (as tests/pipeline/test_dvc_e2e.py does)."""
    import yaml

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py")] + ["dvc.yaml", "params.yaml"]
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "pcr").rglob("*.py")]
    for f in set(files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/demo/", "tests/", "benchmarks/")):
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / f)
    shutil.copytree(Path(b.model), root / "data/model")
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["model"].update(path="data/model", steps=b.cache_steps, scheduler="ddim", device="cpu")
    p["collect"].update(num_prompts=b.cache_prompts, batch_size=b.cache_prompts)
    p["calibrate"]["batch_size"] = b.cache_prompts
    p["eval"].update(num_prompts=b.cache_eval, batch_size=b.cache_eval)
    demo = Path(b.model).resolve() == (ROOT / DEMO_MODEL).resolve()
    (root / "data/demo").mkdir(parents=True, exist_ok=True)
    if demo:  # the demo's own CLIP, judge and rendered ground truth, as the real pipeline scores it
        for name in ("clip", "judge"):
            shutil.copytree(ROOT / "data/demo" / name, root / "data/demo" / name)
        p["score"]["kid_subset_size"] = min(p["score"]["kid_subset_size"], b.cache_eval)
    else:
        sys.path.insert(0, str(ROOT / "tests"))  # the tiny test models are fixtures of the test suite
        from tiny_models import build_tiny_clip

        build_tiny_clip(root / "data/clip")
        (root / "data/demo/judge").mkdir(parents=True, exist_ok=True)  # score's static dep; unused with judge: null
        (root / "data/demo/judge/README").write_text("placeholder\n")
        p["score"].update(feature_path="data/clip", clip_path="data/clip", judge=None, real=None,
                          kid_subset_size=min(b.cache_eval, 4))
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**_child_env(b.threads), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@localhost", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return env


def case_cache(b: Bench) -> dict:
    import re

    root = b.work / "project"
    env = _project_copy(b, root)
    t0 = time.perf_counter()
    run_measured([sys.executable, "-m", "dvc", "repro"], root, env)
    repro_s = time.perf_counter() - t0
    alone = b.work / "alone"
    alone.mkdir(exist_ok=True)
    o = "outputs"
    gen = [sys.executable, "stages/generate.py", "params.yaml", f"{o}/qparams.safetensors", f"{o}/qconfig.json", f"{o}/calib.zarr",
           f"{o}/schedule.json", f"{o}/reference.zarr", str(alone / "generated.zarr")]
    score = [sys.executable, "stages/score.py", "params.yaml", f"{o}/reference.zarr", str(alone / "generated.zarr"),
             f"{o}/trajectories.zarr", f"{o}/calib.zarr", str(alone / "metrics.json"), str(alone / "plots")]
    T = b.cache_steps
    # distinct relaxed-step counts, so every experiment really reruns relax, generate and score
    fractions = [round((i + 1) / T + 1e-9, 4) for i in range(b.repeats)]
    exp_s, gen_s, score_s, ran = [], [], [], []
    for f in fractions:
        w, _, tail = run_measured([sys.executable, "-m", "dvc", "exp", "run", "-S", f"relax.fraction={f}"], root, env)
        exp_s.append(w)
        ran.append(sorted(set(re.findall(r"Running stage '(\w+)'", tail))))
        gen_s.append(run_measured(gen, root, env)[0])  # with the schedule the experiment left in outputs/
        score_s.append(run_measured(score, root, env)[0])
    stages_s = [g + s for g, s in zip(gen_s, score_s, strict=True)]
    return {"ratio": paired_ratio(exp_s, stages_s), "fractions": fractions, "steps": T, "eval_prompts_per_set": b.cache_eval,
            "exp_run_s": median(exp_s), "generate_s": median(gen_s), "score_s": median(score_s),
            "generate_plus_score_s": median(stages_s), "overhead_s": median([e - s for e, s in zip(exp_s, stages_s, strict=True)]),
            "stages_rerun": ran, "initial_repro_s": repro_s,
            "times_s": {"exp_run": exp_s, "generate": gen_s, "score": score_s}}


def case_scaling(b: Bench) -> dict:
    from pcr.calibrate.sweep import sweep

    n_max = max(b.scale_prompts)
    fns, setups = {}, {}
    for n in b.scale_prompts:
        _, traj, _, cal = b.prepared(b.scale_prompt_steps, n_max, subset=n)
        setups[f"N{n}"] = (cal, x_T(traj, n))
    for T in b.scale_steps:
        _, traj, _, cal = b.prepared(T, b.scale_step_prompts)
        setups[f"T{T}"] = (cal, x_T(traj, b.scale_step_prompts))
    for name, (cal, x) in setups.items():
        fns[name] = lambda cal=cal, x=x: sweep(cal, "progressive", x, progress=False)
    t = interleave(fns, b.repeats, warmup=False)
    prompts = {n: median(t[f"N{n}"]) for n in b.scale_prompts}
    steps = {T: median(t[f"T{T}"]) for T in b.scale_steps}
    return {"prompts": {"steps": b.scale_prompt_steps, "batch_size": b.batch, "seconds": prompts,
                        "exponent": fit_exponent(list(prompts), list(prompts.values()))},
            "steps": {"prompts": b.scale_step_prompts, "seconds": steps, "exponent": fit_exponent(list(steps), list(steps.values()))},
            "times_s": t}


RUNNERS = {"calibration_cost": case_calibration_cost, "generation": case_generation, "store": case_store,
           "memory": case_memory, "cache": case_cache, "scaling": case_scaling}


# --------------------------------------------------------------------------- report


def verdict(case: str, r: dict) -> tuple[float, str, float, bool] | None:
    if case not in TARGETS or "error" in r:
        return None
    key, op, target = TARGETS[case]
    v = r[key]
    return v, op, target, v <= target


def table(results: dict) -> list[list[str]]:
    c = results["cases"]
    rows = [["measure", "figure", "target", "met"]]

    def add(case: str, label: str, extra: str = "") -> None:
        r = c.get(case)
        if r is None:
            return
        if "error" in r:
            rows.append([label, f"error: {r['error'][:60]}", "", ""])
            return
        v = verdict(case, r)
        if v:
            val, op, target, ok = v
            rows.append([label, f"{val:.2f}{extra}", f"{op} {target}", "yes" if ok else "MISSED"])

    if (r := c.get("calibration_cost")) and "error" not in r:
        add("calibration_cost", f"calibration: progressive / FP32 pass (T={r['steps']}, N={r['prompts']})",
            f"  ({r['progressive_s']:.2f} s / {r['fp32_pass_s']:.2f} s)")
        for key, label in (("ratio_affine", "  with calibrate.objective=affine (issue 20)"),
                           ("ratio_affine_a4", "  affine at A4 (act_observer auto: MSE ranges)")):
            if key in r:
                rows.append([label, f"{r[key]:.2f}", f"<= {AFFINE_TARGET}", "yes" if r[key] <= AFFINE_TARGET else "MISSED"])
        n = r["naive"]
        rows.append([f"  official naive loop (T={n['steps']}, N={n['prompts']}), in FP32 passes",
                     f"{n['naive_passes']:.1f} (sweep {n['progressive_passes']:.2f}; naive/sweep x{n['naive_over_progressive']:.1f})",
                     f"~{n['expected_naive_passes']:.0f}", ""])
    else:
        add("calibration_cost", "calibration: progressive / FP32 pass")
    if (r := c.get("generation")) and "error" not in r:
        add("generation", f"generation: fake-quant / FP32 per image (T={r['steps']})",
            f"  ({1e3 * r['quantized_s_per_image']:.0f} ms / {1e3 * r['fp32_s_per_image']:.0f} ms)")
    else:
        add("generation", "generation")
    if (r := c.get("store")) and "error" not in r:
        add("store", "activation store: bytes / element (fp32: 4)")
        rows.append(["  write throughput, uncompressed MB/s (per step / bulk)",
                     f"{r['write_mb_per_s_per_step']:.1f} / {r['write_mb_per_s_bulk']:.1f}", "", ""])
    else:
        add("store", "activation store")
    if (r := c.get("memory")) and "error" not in r:
        lo, hi = r["steps"]
        add("memory", f"memory: peak RSS calibrate T={hi} / T={lo}",
            f"  ({r[f'peak_rss_mb_T{hi}']:.0f} MB / {r[f'peak_rss_mb_T{lo}']:.0f} MB)")
    else:
        add("memory", "memory")
    if (r := c.get("cache")) and "error" not in r:
        add("cache", "cache: dvc exp run -S relax.fraction / generate+score alone",
            f"  ({r['exp_run_s']:.1f} s / {r['generate_plus_score_s']:.1f} s)")
    else:
        add("cache", "cache")
    if (r := c.get("scaling")) and "error" not in r:
        p, s = r["prompts"], r["steps"]
        rows.append([f"scaling: calibration s vs prompts {list(p['seconds'])} (T={p['steps']})",
                     " / ".join(f"{v:.2f}" for v in p["seconds"].values()) + f"  exponent {p['exponent']:.2f}", "~1 (linear)", ""])
        rows.append([f"scaling: calibration s vs steps {list(s['seconds'])} (N={s['prompts']})",
                     " / ".join(f"{v:.2f}" for v in s["seconds"].values()) + f"  exponent {s['exponent']:.2f}", "~1 (linear)", ""])
    elif "scaling" in c:
        rows.append(["scaling", f"error: {c['scaling']['error'][:60]}", "", ""])
    return rows


def markdown(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEMO_MODEL, help=f"diffusers pipeline directory (default {DEMO_MODEL})")
    ap.add_argument("--quick", action="store_true", help="small sizes, for development and tests")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per figure (at least 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the machine is shared)")
    ap.add_argument("--only", default="", help=f"comma-separated cases among {','.join(CASES)}")
    ap.add_argument("--skip", default="", help="comma-separated cases to leave out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results.json"))
    ap.add_argument("--update", action="store_true", help="merge the cases run into an existing --out file (others kept)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    if args.repeats < 3:
        ap.error("--repeats must be at least 3: every figure is a median of at least 3 repeats")
    only = [c for c in args.only.split(",") if c] or list(CASES)
    skip = {c for c in args.skip.split(",") if c}
    for c in [*only, *skip]:
        if c not in CASES:
            ap.error(f"unknown case {c!r}: choose among {', '.join(CASES)}")
    model = Path(args.model) if Path(args.model).is_absolute() else ROOT / args.model
    if not (model / "model_index.json").is_file():
        ap.error(f"--model {args.model}: no model_index.json there (is the demo model trained? use a tiny one meanwhile)")

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(f"pcr benchmarks on {model} ({'quick' if args.quick else 'full'}), {args.repeats} repeats, "
          f"{args.threads} torch thread(s); torch.set_flush_denormal(True): denormals flushed to zero in this process", flush=True)

    work_ctx = tempfile.TemporaryDirectory(prefix="pcr-bench-") if args.work is None else None
    work = Path(work_ctx.name if work_ctx else args.work)
    work.mkdir(parents=True, exist_ok=True)
    b = Bench(str(model), work, args.repeats, args.threads, args.quick)
    results = {"command": " ".join([Path(sys.argv[0]).name if argv is None else "run.py", *(sys.argv[1:] if argv is None else argv)]),
               "model": str(args.model), "model_is_demo": model.resolve() == (ROOT / DEMO_MODEL).resolve(), "quick": args.quick,
               "repeats": args.repeats, "machine": machine(args.threads), "cases": {}, "case_wall_s": {}}
    if args.update and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        results["cases"], results["case_wall_s"] = old.get("cases", {}), old.get("case_wall_s", {})
        results["updates"] = [*old.get("updates", []), {"command": results["command"], "cases": [c for c in only if c not in skip],
                                                        "at": time.strftime("%Y-%m-%d %H:%M:%S")}]
        results["command"] = old.get("command", results["command"])
    t_all = time.perf_counter()
    try:
        for case in CASES:
            if case not in only or case in skip:
                continue
            t = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] {case} ...", flush=True)
            try:
                results["cases"][case] = RUNNERS[case](b)
            except Exception as e:  # one broken case must not cost the others' figures
                import traceback

                traceback.print_exc()
                results["cases"][case] = {"error": f"{type(e).__name__}: {e}"}
            results["case_wall_s"][case] = time.perf_counter() - t
            print(f"    {case}: {results['case_wall_s'][case]:.1f} s", flush=True)
            write(results, Path(args.out), time.perf_counter() - t_all)  # partial results survive an interruption
    finally:
        if work_ctx:
            work_ctx.cleanup()
    write(results, Path(args.out), time.perf_counter() - t_all)
    print()
    print(results["table_markdown"])
    print(f"\nwall time {results['wall_s']:.0f} s; results in {args.out}; denormals flushed (torch.set_flush_denormal(True))")
    return 1 if any("error" in r for r in results["cases"].values()) else 0


def record_case(out: str | Path, case: str, figures: dict, command: str, keep: Callable[[dict, dict], None] | None = None) -> None:
    """Merge one case's figures into results.json (the other cases kept) and log the update; for the scripts
    beside this one (int_kernels.py, int_pipeline.py, artifact_size.py). `keep(old, new)` may carry old
    figures a partial rerun did not measure into `new`."""
    out = Path(out)
    results = json.loads(out.read_text()) if out.exists() else {}
    old = results.setdefault("cases", {}).setdefault(case, {})
    if keep is not None:
        keep(old, figures)
    old.update(figures)
    results.setdefault("updates", []).append({"command": command, "cases": [case], "at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                              "machine": machine(1)})
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")


def write(results: dict, out: Path, wall: float) -> None:
    results["wall_s"] = sum(results["case_wall_s"].values()) if results.get("updates") else wall
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = {c: {"figure": k, "target": f"{op} {v}", "met": verdict(c, results["cases"][c])[3]}
                          for c, (k, op, v) in TARGETS.items() if c in results["cases"] and verdict(c, results["cases"][c])}
    results["table_markdown"] = markdown(table(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
