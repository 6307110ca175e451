#!/usr/bin/env python
"""Does int8 attention pay on OpenVINO's CPU plugin when q and k carry per-step scales? (issue 22)

    pip install -e '.[bench-openvino]'
    python benchmarks/openvino_attention.py [--repeats 20] [--tokens 1024] [--out benchmarks/openvino_attention.json]

NNCF's int8 SD UNet FakeQuantizes the q and k of every scaled_dot_product_attention with constant ranges, and OpenVINO
runs the attention as one i8 MHA kernel. pcr's activation scales are per step, so q and k codes would be q / s_q,k and
k / s_k,k (runtime scalars gathered by the step index), and the scores need the runtime factor s_q,k s_k,k / sqrt(d).
One self-attention of SD 1.5's first block (batch 2, 1024 tokens, 8 heads of 40), one thread, the inference precision
hint bf16, timed interleaved, ratios to the float attention paired per round with a 95% bootstrap interval:
  float            scaled_dot_product_attention on float q, k, v (what pcr's route runs now)
  int8_constant    q, k FakeQuantized to int8 with a constant scale (NNCF's graph: the reference for the i8 kernel)
  int8_step_sdpa   q, k codes from runtime per-step scales, the factor on the q codes before the attention op
  int8_step_decomp the same with the attention written out, the factor on the scores (MatMul, Multiply, Softmax, MatMul)
Also saved: each variant's executed attention kernel (the runtime precision OpenVINO chose).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import interleave, machine, median, paired_ratio, paired_ratio_ci  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH, WIDTH, HEADS, STEPS = 2, 320, 8, 25  # SD 1.5's first transformer block, T = 25
VARIANTS = ("float", "int8_constant", "int8_step_sdpa", "int8_step_decomp")


class Attention(torch.nn.Module):
    """Attention over [B, N, C] q, k, v at step `step` (a [1] int64 input, as in pcr's export)."""

    def __init__(self, variant: str):
        super().__init__()
        self.variant = variant
        g = torch.Generator().manual_seed(0)
        self.register_buffer("inv_scale", 0.5 + torch.rand(STEPS, generator=g))  # 1 / s_k per step
        self.register_buffer("factor", 0.01 + 0.01 * torch.rand(STEPS, generator=g))  # s_q s_k / sqrt(d) per step

    def forward(self, q, k, v, step):
        q, k, v = (t.reshape(BATCH, -1, HEADS, WIDTH // HEADS).transpose(1, 2) for t in (q, k, v))  # [B, H, N, d]
        if self.variant == "float":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            inv = 1.0 if self.variant == "int8_constant" else self.inv_scale.index_select(0, step).reshape(1, 1, 1, 1)
            qc = torch.fake_quantize_per_tensor_affine(q * inv, 1.0, 0, -128, 127)  # constant range: i8 codes
            kc = torch.fake_quantize_per_tensor_affine(k * inv, 1.0, 0, -128, 127)
            a = self.factor.index_select(0, step).reshape(1, 1, 1, 1)
            if self.variant == "int8_constant":
                out = F.scaled_dot_product_attention(qc, kc, v, scale=0.01)
            elif self.variant == "int8_step_sdpa":
                out = F.scaled_dot_product_attention(qc * a, kc, v, scale=1.0)
            else:
                out = torch.softmax(qc @ kc.transpose(-1, -2) * a, -1) @ v
        return out.transpose(1, 2).reshape(BATCH, -1, WIDTH)


def attention_kernels(request) -> dict[str, float]:
    """Executed nodes by type:kernel with their time (ms) over one inference, those above 0.1 ms."""
    out: dict[str, float] = {}
    for p in request.profiling_info:
        ms = p.real_time.total_seconds() * 1e3
        if p.status == p.Status.EXECUTED and ms > 0.1:
            key = f"{p.node_type}:{p.exec_type}"
            out[key] = round(out.get(key, 0.0) + ms, 3)
    return out


@torch.no_grad()
def measure(repeats: int, tokens: int) -> dict:
    import openvino as ov

    g = torch.Generator().manual_seed(1)
    example = tuple(torch.randn(BATCH, tokens, WIDTH, generator=g) for _ in range(3)) + (torch.zeros(1, dtype=torch.long),)
    feed = [t.numpy() for t in example]
    core, requests, kernels = ov.Core(), {}, {}
    for variant in VARIANTS:
        model = ov.convert_model(Attention(variant).eval(), example_input=example)
        config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "bf16", "PERF_COUNT": True}
        requests[variant] = core.compile_model(model, "CPU", config).create_infer_request()
        requests[variant].infer(feed)
        kernels[variant] = attention_kernels(requests[variant])
    times = interleave({v: (lambda r=r: r.infer(feed)) for v, r in requests.items()}, repeats, warmup=True)
    out = {"tokens": tokens, "batch": BATCH, "heads": HEADS, "width": WIDTH, "repeats": repeats,
           "ms": {v: 1e3 * median(t) for v, t in times.items()},
           "ratio_to_float": {v: paired_ratio(t, times["float"]) for v, t in times.items()},
           "ratio_to_float_ci95": {v: paired_ratio_ci(t, times["float"]) for v, t in times.items()},
           "kernels": kernels, "times_s": times}
    for v in VARIANTS:
        lo, hi = out["ratio_to_float_ci95"][v]
        print(f"{v:>17}: {out['ms'][v]:6.2f} ms  / float {out['ratio_to_float'][v]:.3f} [{lo:.3f}, {hi:.3f}]  {kernels[v]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/openvino_attention.json")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.tokens < 1:
        ap.error(f"--repeats {args.repeats} --tokens {args.tokens}: both must be >= 1")
    torch.set_num_threads(1)
    out = measure(args.repeats, args.tokens)
    out |= {"command": "python benchmarks/openvino_attention.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "at": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(1)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
