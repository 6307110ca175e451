#!/usr/bin/env python
"""Integer kernels against FP32, layer by layer on the SD 1.5 UNet's own Conv2d and Linear shapes (issue 12).

    python benchmarks/int_kernels.py [--repeats 3] [--quick] [--compiled] [--out benchmarks/results.json]

The UNet is built from the SD 1.5 config on the meta device (no weights); one forward at 32x32 latents,
batch 2, records the input shape of every Conv2d and Linear. Per distinct shape, with random weights,
one torch thread, the routes are timed interleaved (run.py's `interleave`), quantize and dequantize
included in every integer route:
  fp32      F.conv2d / F.linear
  int       pcr.quant.kernels (oneDNN conv on the CPU, torch._int_mm linear), 8-bit asymmetric weights
  int_sym   the same with symmetric weights (no weight zero-point term)
  im2col    int_conv2d's im2col + torch._int_mm route, asymmetric weights            (Conv2d only)
  ao        torch.ao's x86 quantized conv (quantized-tensor API, requantized output)  (Conv2d only)
--compiled: fp32, int and int_sym each under torch.compile(fullgraph=True) (inductor fuses the quantize
and rescale passes), on the most frequent shape of each layer type; saved as `per_layer_compiled`.
Writes case `int_kernels` into results.json (`per_layer`, `weight_memory_ratio`), keeping everything else.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import interleave, median, record_case  # noqa: E402

from pcr.quant.affine import params_from_range, quantize  # noqa: E402
from pcr.quant.kernels import int_conv2d, int_linear, prepare_conv2d, prepare_linear  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SD15 = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
            attention_head_dim=8, norm_num_groups=32)
KEEP_FLOAT = ("conv_in", "conv_out")  # params.yaml quant.keep_float
STEPS = 25  # params.yaml generate steps: size of the per-step tables


def sd15_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**SD15)


def layer_shapes(unet, latent: int = 32, batch: int = 2) -> list[dict]:
    """Distinct (layer config, input shape) of the quantized Conv2d/Linear layers, with counts."""
    seen: dict[tuple, dict] = {}
    counts: collections.Counter = collections.Counter()

    def hook(name):
        def record(m, inp, out):
            if isinstance(m, torch.nn.Conv2d):
                kind = "conv3x3" if m.kernel_size == (3, 3) else f"conv{m.kernel_size[0]}x{m.kernel_size[1]}"
                key = (kind, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, tuple(inp[0].shape))
            else:
                key = ("linear", m.in_features, m.out_features, tuple(inp[0].shape))
            counts[key] += 1
            seen.setdefault(key, {"type": key[0], "example": name, "input": list(inp[0].shape), "module": m})
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in unet.named_modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and n not in KEEP_FLOAT]
    with torch.no_grad():
        unet(torch.empty(batch, 4, latent, latent, device="meta"), torch.tensor(10, device="meta"),
             encoder_hidden_states=torch.empty(batch, 77, SD15["cross_attention_dim"], device="meta"))
    for h in handles:
        h.remove()
    return [dict(v, count=counts[k]) for k, v in seen.items()]


def _weights(w: torch.Tensor, symmetric: bool):
    flat = w.flatten(1)
    scale, zp = params_from_range(flat.amin(1), flat.amax(1), 8, symmetric)
    return quantize(w, scale, zp, 8, symmetric, axis=0), scale, zp


def routes(layer: dict, g: torch.Generator) -> dict:
    """name -> zero-argument callable, all on the same input and weights."""
    m = layer["module"]
    x = torch.randn(*layer["input"], generator=g)
    w = torch.randn(*m.weight.shape, generator=g) * 0.05
    b = torch.randn(m.weight.shape[0], generator=g) * 0.1
    s_x, z_x = params_from_range(x.min(), x.max(), 8, False)
    act = (s_x.reshape(1), z_x.reshape(1), torch.tensor([8], dtype=torch.int32))
    k = torch.tensor(0)
    fns = {}
    if layer["type"] == "linear":
        fns["fp32"] = lambda: F.linear(x, w, b)
        for name, sym in (("int", False), ("int_sym", True)):
            p, spec = prepare_linear(*_weights(w, sym), *act, weight_bits=8, weight_symmetric=sym, act_symmetric=False)
            fns[name] = lambda p=p, spec=spec: int_linear(x, k, p, spec, b)
        return fns
    conv = dict(stride=m.stride, padding=m.padding)
    fns["fp32"] = lambda: F.conv2d(x, w, b, m.stride, m.padding)
    for name, sym, route in (("int", False, None), ("int_sym", True, None), ("im2col", False, "im2col")):
        p, spec = prepare_conv2d(*_weights(w, sym), *act, weight_bits=8, weight_symmetric=sym, act_symmetric=False,
                                 route=route, **conv)
        fns[name] = lambda p=p, spec=spec: int_conv2d(x, k, p, spec, b)
    codes, s_w, _ = _weights(w, True)
    qw = torch.quantize_per_channel(codes.float() * s_w[:, None, None, None], s_w.double(),
                                    torch.zeros(len(s_w), dtype=torch.long), 0, torch.qint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed = torch.ops.quantized.conv2d_prepack(qw, b, list(m.stride), list(m.padding), [1, 1], 1)
        y = F.conv2d(x, w, b, m.stride, m.padding)
    s_y, z_y = params_from_range(y.min(), y.max(), 8, False)

    def ao():
        qx = torch.quantize_per_tensor(x, float(s_x), int(z_x), torch.quint8)
        return torch.ops.quantized.conv2d(qx, packed, float(s_y), int(z_y)).dequantize()

    fns["ao"] = ao
    return fns


def time_layer(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each route; calls batched so each timing is >= ~30 ms."""
    for fn in fns.values():
        fn()
    t = time.perf_counter()
    fns["fp32"]()
    n = max(1, min(50, math.ceil(0.03 / max(time.perf_counter() - t, 1e-6))))
    looped = {name: (lambda fn=fn: [fn() for _ in range(n)]) for name, fn in fns.items()}
    return {name: median(ts) / n for name, ts in interleave(looped, repeats).items()}


def weight_memory(unet, steps: int = STEPS) -> dict:
    """Resident bytes of the UNet's weights: fp32 against int codes + per-channel scale/zero point + per-step tables."""
    fp32 = sum(p.numel() * 4 for p in unet.parameters())
    q_numel = q_channels = q_tables = 0
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and name not in KEEP_FLOAT:
            q_numel += m.weight.numel()
            q_channels += m.weight.shape[0]
            # act tables: scale, 1/scale, lo, hi, d_x, zero point, narrow (4+4+4+4+4+4+1 bytes per step);
            # Linear: corr [T, C_out] int32 (oneDNN convs need none)
            q_tables += steps * 25 + (steps * m.weight.shape[0] * 4 if isinstance(m, torch.nn.Linear) else 0)
    rest = fp32 - q_numel * 4
    per_channel = q_channels * (4 + 4)  # scale f32 + zero point int32 (d_w)
    w8 = rest + q_numel + per_channel + q_tables
    w4 = rest + math.ceil(q_numel / 2) + per_channel + q_tables
    return {"fp32_bytes": fp32, "int8_bytes": w8, "int4_packed_bytes": w4, "ratio_w8": w8 / fp32, "ratio_w4_packed": w4 / fp32,
            "quantized_weight_share": q_numel * 4 / fp32, "per_step_table_bytes": q_tables, "steps": steps,
            "note": "int = codes + per-channel scale/zero point + per-step tables; biases, norms, conv_in/conv_out in fp32"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one layer per type (development)")
    ap.add_argument("--compiled", action="store_true", help="torch.compile'd routes, most frequent shape per type")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    start = time.perf_counter()
    unet = sd15_unet()
    layers = layer_shapes(unet)
    if args.quick or args.compiled:  # the most frequent shape of each type (ties: the larger input)
        order = sorted(layers, key=lambda la: (la["count"], math.prod(la["input"])))
        layers = list({la["type"]: la for la in order}.values())
    g = torch.Generator().manual_seed(0)
    rows = []
    for la in layers:
        fns = routes(la, g)
        if args.compiled:
            fns = {n: torch.compile(fn, fullgraph=True) for n, fn in fns.items() if n in ("fp32", "int", "int_sym")}
        times = time_layer(fns, args.repeats)
        rows.append({k: v for k, v in la.items() if k != "module"} | {"ms": {r: 1e3 * t for r, t in times.items()}})
        print(f"{la['type']:8s} {str(la['input']):22s} x{la['count']:<3d} "
              + " ".join(f"{r}={t * 1e3:.3f}ms" for r, t in times.items()), flush=True)
    by_type: dict[str, dict] = {}
    for kind in sorted({r["type"] for r in rows}) + ["all"]:
        sel = [r for r in rows if kind in (r["type"], "all")]
        names = [n for n in sel[0]["ms"] if all(n in r["ms"] for r in sel)]
        total = {n: sum(r["count"] * r["ms"][n] for r in sel) for n in names}
        by_type[kind] = {"layers": sum(r["count"] for r in sel), "total_ms": total,
                         "ratio_to_fp32": {n: total[n] / total["fp32"] for n in names if n != "fp32"}}
        print(f"{kind:8s} " + " ".join(f"{n}/fp32={v:.3f}" for n, v in by_type[kind]["ratio_to_fp32"].items()))
    mem = weight_memory(unet)
    print(f"weight memory int8/fp32 = {mem['ratio_w8']:.3f} (4-bit packed: {mem['ratio_w4_packed']:.3f})")
    key = "per_layer_compiled" if args.compiled else "per_layer"
    figures = {key: {"by_type": by_type, "layers": rows, "latent": 32, "batch": 2, "repeats": args.repeats,
                     "quick": args.quick, "threads": 1, "wall_s": time.perf_counter() - start},
               "weight_memory_ratio": mem["ratio_w8"], "weight_memory": mem}
    record_case(args.out, "int_kernels", figures, "int_kernels.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
