#!/usr/bin/env python
"""Before/after measurements of proposed fixes, interleaved in one process (not part of the main run).

    python benchmarks/proposals.py [--model DIR] [--quick]

`before` is the ActQuantizer.forward in the code (torch's `fake_quantize_per_tensor_affine` until
commit b1e7168, the five ops below since), `after` the five vectorised elementwise ops
    x_hat = (clamp(round(x * (1/s)) + z, q_min, q_max) - z) * s
and `after_4ops` the four-op form clamp(round(x * (1/s)), q_min - z, q_max - z) * s with z a
Python int. All agree bit for bit with torch's kernel (checked here on every layer input of a
sampling run). torch's CPU kernel is scalar and also writes a mask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402

from pcr.quant.modules import ActQuantizer  # noqa: E402
from pcr.quant.step import current_step  # noqa: E402

ORIGINAL_FORWARD = ActQuantizer.forward


def fast_forward(self: ActQuantizer, x: torch.Tensor) -> torch.Tensor:
    """The proposed ActQuantizer.forward."""
    if not self.enabled:
        return x
    k = current_step()
    q_min, q_max = self._ranges[k]
    s, z = self.scale[k], self.zero_point[k]
    xq = torch.mul(x.float(), 1.0 / s).round_().add_(z).clamp_(q_min, q_max).sub_(z).mul_(s)
    return xq.to(x.dtype)


def fast_forward4(self: ActQuantizer, x: torch.Tensor) -> torch.Tensor:
    """Four ops: clamp(round(x/s) + z, q_min, q_max) - z == clamp(round(x/s), q_min - z, q_max - z), exact in float32
    for codes below 2^24 (zero points are cached as Python ints, like the ranges)."""
    if not self.enabled:
        return x
    k = current_step()
    q_min, q_max = self._ranges[k]
    z = int(self.zero_point[k])
    s = self.scale[k]
    return torch.mul(x.float(), 1.0 / s).round_().clamp_(q_min - z, q_max - z).mul_(s).to(x.dtype)


class use:
    """Context: ActQuantizer.forward is `fn` inside."""

    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        ActQuantizer.forward = self.fn

    def __exit__(self, *exc):
        ActQuantizer.forward = ORIGINAL_FORWARD


def check_bit_exact(cal, x) -> int:
    """Every quantized layer input of one step: both forwards give identical tensors. Returns inputs checked."""
    checked = []

    def hook(module, args):
        a = args[0]
        with use(ORIGINAL_FORWARD):
            ref = module.input_quant(a)
        with use(fast_forward):
            new = module.input_quant(a)
        with use(fast_forward4):
            new4 = module.input_quant(a)
        if not (torch.equal(ref, new) and torch.equal(ref, new4)):
            raise AssertionError(f"fast fake-quant differs from torch's kernel on a {tuple(a.shape)} input")
        checked.append(1)

    handles = [q.register_forward_pre_hook(hook) for q in cal.qlayers.values()]
    try:
        from pcr.models.conditioning import select

        sched = cal.sampler.new_scheduler()
        b = cal.batches[0]
        for k in range(cal.sampler.num_steps):
            cal.sampler.eps(x[b], k, select(cal.cond, b), sched)
    finally:
        for h in handles:
            h.remove()
    return len(checked)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=R.DEMO_MODEL)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(R.ROOT / "benchmarks/proposals.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    import tempfile

    from pcr.calibrate.sweep import sweep
    from pcr.config import read_prompts
    from pcr.sampling import conditioning, sample

    model = Path(args.model) if Path(args.model).is_absolute() else R.ROOT / args.model
    with tempfile.TemporaryDirectory(prefix="pcr-prop-") as work:
        b = R.Bench(str(model), Path(work), args.repeats, 1, args.quick)
        p, traj, pipe, cal = b.prepared(b.steps, b.prompts)
        x0 = R.x_T(traj, b.prompts)
        sweep(cal, "progressive", x0, progress=False)
        n_checked = check_bit_exact(cal, x0)
        _, fp = R.fp_sampler(b, b.steps)
        prompts = read_prompts(R.ROOT / "data/prompts/eval.txt", b.eval_prompts)
        cond = conditioning(pipe, prompts, p.model, fp)
        seeds = [1000 + i for i in range(len(prompts))]

        def with_fwd(fn, f):
            def run():
                with use(f):
                    fn()
            return run

        t = R.interleave({
            "fp32_pass": lambda: R.fp32_pass(fp, cal.cond, x0, b.batch),
            "sweep_before": with_fwd(lambda: sweep(cal, "progressive", x0, progress=False), ORIGINAL_FORWARD),
            "sweep_after": with_fwd(lambda: sweep(cal, "progressive", x0, progress=False), fast_forward),
            "sweep_after4": with_fwd(lambda: sweep(cal, "progressive", x0, progress=False), fast_forward4),
            "gen_fp32": lambda: sample(fp, cond, seeds),
            "gen_before": with_fwd(lambda: sample(cal.sampler, cond, seeds), ORIGINAL_FORWARD),
            "gen_after": with_fwd(lambda: sample(cal.sampler, cond, seeds), fast_forward),
            "gen_after4": with_fwd(lambda: sample(cal.sampler, cond, seeds), fast_forward4),
        }, args.repeats, warmup=True)
        res = {
            "model": str(args.model), "steps": b.steps, "prompts": b.prompts, "eval_images": len(prompts),
            "bit_exact_inputs_checked": n_checked,
            "calibration_ratio_before": R.paired_ratio(t["sweep_before"], t["fp32_pass"]),
            "calibration_ratio_after": R.paired_ratio(t["sweep_after"], t["fp32_pass"]),
            "calibration_ratio_after_4ops": R.paired_ratio(t["sweep_after4"], t["fp32_pass"]),
            "generation_ratio_before": R.paired_ratio(t["gen_before"], t["gen_fp32"]),
            "generation_ratio_after": R.paired_ratio(t["gen_after"], t["gen_fp32"]),
            "generation_ratio_after_4ops": R.paired_ratio(t["gen_after4"], t["gen_fp32"]),
            "times_s": t,
        }
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "times_s"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
