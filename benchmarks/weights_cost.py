"""What AdaRound reconstruction costs on SD 1.4 / 1.5 (same UNet), extrapolated without the model's weights.

The UNet is built from SD 1.5's config on the meta device: torch's FLOP counter gives every reconstruction unit's
forward FLOPs per row (one CFG branch of one sample at 64 x 64 latents). One iteration of a unit costs about
3x its forward (forward, backward to the activations and to V) at `batch_size` rows. Two blocks with random
weights (the largest-resolution ResnetBlock2D and BasicTransformerBlock) are timed here for real, which gives
this machine's achieved FLOP/s on the reconstruction loop; the whole stage's time follows from the FLOPs.

    python benchmarks/weights_cost.py [--iterations 2000] [--batch-size 32] [--rows 1020] [--timed-batch 2] [--out benchmarks/weights_cost.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pcr.config import QuantConfig, ReconConfig
from pcr.quant.quantize import select_layers
from pcr.weights.reconstruct import Unit, UnitData, reconstruct_unit, units

SD15 = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)


def unit_flops() -> tuple[list[dict], float]:
    """Per unit, in execution order: forward FLOPs per row; and the whole UNet's forward FLOPs per row."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15)
    names = select_layers(unet, ("*",), (), ("conv_in", "conv_out"))
    plan = {u.module: u for u in units(unet, names, "block")}
    order = []
    for name in plan:
        unet.get_submodule(name).register_forward_pre_hook(lambda m, a, name=name: order.append(name) if name not in order else None)
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        unet(torch.empty(1, 4, 64, 64, device="meta"), torch.tensor(10), torch.empty(1, 77, 768, device="meta"))
    counts = counter.get_flop_counts()
    rows = [{"unit": n, "kind": plan[n].kind, "layers": len(plan[n].layers), "flops": sum(counts[f"UNet2DConditionModel.{n}"].values())}
            for n in order]
    return rows, sum(counts["Global"].values())


def timed_iteration(block: nn.Module, args: list, kwargs: dict, batch: int, iterations: int = 3) -> float:
    """Seconds of one reconstruction iteration of `block` at `batch` rows, with pcr's own loop."""
    model = nn.Sequential(block)
    layers = [f"0.{n}" for n, m in block.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        target = block(*args, **kwargs)
    data = UnitData(list(args), kwargs, {f"arg{i}" for i in range(len(args))} | set(kwargs), target)
    unit = Unit("0", "block", tuple(layers))

    def run(n: int) -> float:
        quant = QuantConfig(weight_bits=4, weight_observer="minmax", recon=ReconConfig(iterations=n, batch_size=batch))
        t0 = time.perf_counter()
        reconstruct_unit(model, unit, data, quant, torch.Generator().manual_seed(0))
        return time.perf_counter() - t0

    run(1)  # warm-up
    return (run(1 + iterations) - run(1)) / iterations  # the fixed cost (set-up, error evaluation) cancels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rows", type=int, default=1020, help="calibration rows per unit: 10 samples x 51 PLMS steps x 2 CFG branches")
    ap.add_argument("--timed-batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/weights_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows, unet_flops = unit_flops()
    b = args.timed_batch
    timed = {}
    for name, block, a, kw in (
        ("ResnetBlock2D 320x64x64", ResnetBlock2D(in_channels=320, out_channels=320, temb_channels=1280), [torch.randn(b, 320, 64, 64), torch.randn(b, 1280)], {}),
        ("BasicTransformerBlock 4096x320", BasicTransformerBlock(320, 8, 40, cross_attention_dim=768), [torch.randn(b, 4096, 320)],
         {"encoder_hidden_states": torch.randn(b, 77, 768)}),
    ):
        seconds = timed_iteration(block, a, kw, b)
        fwd = FlopCounterMode(display=False)
        with torch.no_grad(), fwd:
            block(*a, **kw)
        timed[name] = {"batch": b, "seconds_per_iteration": seconds, "forward_flops": fwd.get_total_flops(),
                       "achieved_flops_per_s": 3 * fwd.get_total_flops() / seconds}
        print(name, json.dumps(timed[name]))
    rate = min(t["achieved_flops_per_s"] for t in timed.values())
    train = sum(3 * r["flops"] * args.batch_size * args.iterations for r in rows)
    evals = sum(2 * r["flops"] * args.rows for r in rows)  # the rtn and AdaRound output errors, forward only
    prefix, capture = 0, 0
    for r in rows:  # pcr: the float UNet up to and including the unit, on every calibration row
        prefix += r["flops"]
        capture += prefix * args.rows
    official_capture = len(rows) * unet_flops * args.rows  # the official code: full generations per unit
    out = {
        "units": len(rows), "blocks": sum(r["kind"] == "block" for r in rows), "unet_forward_flops_per_row": unet_flops,
        "iterations": args.iterations, "batch_size": args.batch_size, "rows": args.rows, "timed": timed,
        "flops": {"train": train, "error_evaluation": evals, "capture_pcr": capture, "capture_official": official_capture},
        "this_cpu_threads": args.threads, "this_cpu_flops_per_s": rate,
        "this_cpu_hours": (train + evals + capture) / rate / 3600,
    }
    for tflops in (50, 200):  # sustained GPU throughput assumed, not measured (no GPU in this session)
        out[f"hours_at_{tflops}_tflops"] = (train + evals + capture) / (tflops * 1e12) / 3600
    print(json.dumps({k: v for k, v in out.items() if k != "timed"}, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
