#!/usr/bin/env python
"""Integer kernels in the whole model (issue 12): int vs fake vs fp32, one UNet call and one pipeline call.

    python benchmarks/int_pipeline.py [--repeats 3] [--skip-sd] [--skip-demo] [--compiled] [--out benchmarks/results.json]

sd_unet: the SD 1.5-config UNet2DConditionModel with random weights (seed 0), quantized W8A8 with
    quantize_model (params.yaml's defaults: asymmetric weights, conv_in/conv_out float, minmax weights)
    and random per-step ranges (set_step, T=25), one forward at 32x32 latents, batch 2, one thread.
    Ratios are paired: the median over repeats of t / t_fp32 within one round (a load change cancels).
    fp32 / fake / int / int_sym UNets are timed interleaved; fake and int share the stored codes; int_sym
    is the int UNet with symmetric weights (same activations): the eager cost of the weight zero point.
demo_pipeline: the stock StableDiffusionPipeline of data/demo/pipeline, one call (4 prompts, DDIM 25
    steps, guidance 4.5, 2 CFG branches per UNet call). The quantized artifact is built in-process from
    the demo UNet with per-step ranges from one fp32 pipeline call (min/max per layer and step; no PCR
    calibration: timing does not depend on it), then loaded with pcr.load_pipeline(kernels=fake|int).
    --compiled adds torch.compile (inductor, fullgraph) of the fp32 and int UNets on the demo pipeline.
weight memory: resident bytes of the UNet's parameters and buffers (each storage once), int vs fp32;
    "int_path" leaves out the stored codes (the int forward reads only the derived int8 weights).
Writes case `int_kernels` (sd_unet_ratio, demo_pipeline_ratio, weight memory, fake ratios) into
results.json, keeping the keys already there (per_layer from int_kernels.py).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int_kernels import SD15, STEPS  # noqa: E402
from run import interleave, median, paired_ratio, record_case  # noqa: E402

import pcr  # noqa: E402
from pcr.config import QuantConfig  # noqa: E402
from pcr.models.schedulers import make_scheduler  # noqa: E402
from pcr.quant import apply_quant_map, qmodules, quantize_model, save_quantized  # noqa: E402
from pcr.quant.kernels import use_kernels  # noqa: E402
from pcr.quant.qmap import QuantMap  # noqa: E402
from pcr.quant.step import step_counter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data/demo/pipeline"
QCFG = QuantConfig(weight_bits=8, act_bits=8, weight_observer="minmax", act_observer="minmax")  # keep_float conv_in/out
PROMPTS = ["a red circle on a blue background", "a green square", "a small yellow triangle", "a gray circle"]


def resident_bytes(model: torch.nn.Module, skip: str | None = None) -> int:
    """Bytes of the model's parameters and buffers, each storage counted once; names ending in `skip` left out."""
    seen, total = set(), 0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if skip and name.endswith(skip):
            continue
        key = t.untyped_storage().data_ptr() if t.layout == torch.strided else id(t)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()  # oneDNN's prepacked weights: their logical int8 size
    return total


def memory(fp32: torch.nn.Module, int_unet: torch.nn.Module) -> dict:
    f, i = resident_bytes(fp32), resident_bytes(int_unet)
    path = resident_bytes(int_unet, skip="weight_codes")
    return {"fp32_bytes": f, "int_bytes": i, "int_path_bytes": path, "ratio": i / f, "int_path_ratio": path / f}


def shared_twin(unet: torch.nn.Module, qmap: QuantMap) -> torch.nn.Module:
    """A second quantized UNet holding the same tensors as `unet` (built on meta, tensors assigned)."""
    with torch.device("meta"):
        twin = type(unet).from_config(unet.config)
    apply_quant_map(twin, qmap)
    twin.load_state_dict(unet.state_dict(), strict=True, assign=True)
    step_counter(twin).index = torch.zeros(1, dtype=torch.long)
    return twin.eval()


def timed(fns: dict, repeats: int) -> tuple[dict, dict]:
    """(median ms of each fn, paired ratio of each to fp32: median over repeats of t / t_fp32 of the same round)."""
    with torch.no_grad():
        for fn in fns.values():  # warm-up (and compilation)
            fn()
        times = interleave(fns, repeats)
    ms = {n: 1e3 * median(ts) for n, ts in times.items()}
    ratios = {n: paired_ratio(ts, times["fp32"]) for n, ts in times.items() if n != "fp32"}
    print("  " + " ".join(f"{n}={v:.1f}ms" for n, v in ms.items()) + "  " + " ".join(f"{n}/fp32={r:.3f}" for n, r in ratios.items()),
          flush=True)
    return ms, ratios


@torch.no_grad()
def sd_unet(repeats: int) -> dict:
    from diffusers import UNet2DConditionModel

    timesteps = [float(t) for t in range(960, -1, -40)]  # T = 25, like params.yaml's DDIM 25 steps
    torch.manual_seed(0)
    fp32 = UNet2DConditionModel(**SD15).eval()
    torch.manual_seed(0)
    q = UNet2DConditionModel(**SD15).eval()
    qmap = quantize_model(q, QCFG, timesteps)
    g = torch.Generator().manual_seed(0)
    for m in qmodules(q).values():
        for k in range(len(timesteps)):
            m.input_quant.set_step(k, -1 - 3 * torch.rand((), generator=g), 1 + 3 * torch.rand((), generator=g))
    fake, int_unet = q, shared_twin(q, qmap)
    t = time.perf_counter()
    summary = use_kernels(int_unet, "int")
    prepare_s = time.perf_counter() - t
    print(f"sd_unet: {summary['int']} layers int, {summary['fake']} fake, use_kernels {prepare_s:.1f} s", flush=True)
    torch.manual_seed(0)
    int_sym = UNet2DConditionModel(**SD15).eval()  # the eager cost of asymmetric weights: the same with symmetric ones
    quantize_model(int_sym, replace(QCFG, weight_symmetric=True), timesteps)
    int_sym.load_state_dict({k: v for k, v in q.state_dict().items() if "input_quant" in k}, strict=False)
    use_kernels(int_sym, "int")
    x = torch.randn(2, 4, 32, 32, generator=g)
    c = torch.randn(2, 77, SD15["cross_attention_dim"], generator=g)
    ms, r = timed({name: (lambda u=u: u(x, timesteps[0], encoder_hidden_states=c)) for name, u in
                   (("fp32", fp32), ("fake", fake), ("int", int_unet), ("int_sym", int_sym))}, repeats)
    mem = memory(fp32, int_unet)
    return {"ms": ms, "int_ratio": r["int"], "fake_ratio": r["fake"], "int_sym_ratio": r["int_sym"], "memory": mem,
            "summary": summary, "use_kernels_s": prepare_s, "latent": 32, "batch": 2, "steps": len(timesteps)}


def demo_artifact(out: Path, qcfg: QuantConfig = QCFG) -> Path:
    """The demo UNet quantized W8A8 (qcfg), per-step ranges from one fp32 pipeline call, saved as an artifact."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(DEMO, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = scheduler = make_scheduler("ddim", pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    unet = pipe.unet.eval()
    names = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
             and n not in qcfg.keep_float]
    ranges: dict[str, list] = {n: [] for n in names}

    def record(name):
        def hook(m, inputs):
            ranges[name].append((inputs[0].min(), inputs[0].max()))  # one call per step
        return hook

    handles = [unet.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    with torch.no_grad():
        pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=4.5, output_type="np",
             generator=torch.Generator().manual_seed(0))
    for h in handles:
        h.remove()
    qmap = quantize_model(unet, qcfg, scheduler.timesteps.tolist(), type(scheduler).__name__, STEPS)
    for name, m in qmodules(unet).items():
        for k, (lo, hi) in enumerate(ranges[name]):
            m.input_quant.set_step(k, lo, hi)
    meta = {"scheduler": dict(scheduler.config), "num_inference_steps": STEPS}
    save_quantized(unet, QuantMap(qmap.num_steps, qmap.weight_observer, qmap.act_observer, qmap.layers, meta=meta), out,
                   scheduler)
    return out


@torch.no_grad()
def demo_pipeline(repeats: int, quantized: Path | None, compiled: bool) -> dict:
    from diffusers import StableDiffusionPipeline

    tmp = tempfile.TemporaryDirectory()
    built = quantized is None
    quantized = demo_artifact(Path(tmp.name) / "quantized") if built else quantized
    fp32 = StableDiffusionPipeline.from_pretrained(DEMO, safety_checker=None, requires_safety_checker=False)
    pipes = {"fp32": fp32, "fake": pcr.load_pipeline(DEMO, quantized), "int": pcr.load_pipeline(DEMO, quantized, kernels="int")}
    fp32.scheduler = pipes["int"].scheduler
    steps = pipes["int"].unet.pcr_step.num_inference_steps

    def call(pipe):
        return lambda: pipe(PROMPTS, num_inference_steps=steps, guidance_scale=4.5, output_type="np",
                            generator=torch.Generator().manual_seed(0))

    print("demo_pipeline:", flush=True)
    ms, r = timed({n: call(p) for n, p in pipes.items()}, repeats)
    out = {"ms": ms, "int_ratio": r["int"], "fake_ratio": r["fake"], "prompts": len(PROMPTS),
           "steps": steps, "summary": pipes["int"].unet.pcr_kernels, "memory": memory(fp32.unet, pipes["int"].unet),
           "artifact": "built in-process (fp32 min/max ranges)" if built else str(quantized)}
    if compiled:
        print("demo_pipeline, torch.compile(inductor, fullgraph) UNets:", flush=True)
        for name in ("fp32", "int"):
            pipes[name].unet = torch.compile(pipes[name].unet, fullgraph=True)
        t = time.perf_counter()
        cms, cr = timed({n: call(pipes[n]) for n in ("fp32", "int")}, repeats)
        out["compiled"] = {"ms": cms, "int_ratio": cr["int"], "int_vs_eager_fp32": cms["int"] / ms["fp32"],
                           "wall_s_with_compile": time.perf_counter() - t, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp.cleanup()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sd", action="store_true")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--compiled", action="store_true", help="also inductor-compiled UNets in the demo pipeline")
    ap.add_argument("--quantized", type=Path, default=None, help="a demo artifact (outputs/quantized) instead of building one")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    start = time.perf_counter()
    figures: dict = {}
    if not args.skip_demo:
        demo = demo_pipeline(args.repeats, args.quantized, args.compiled)
        figures |= {"demo_pipeline_ratio": demo["int_ratio"], "demo_pipeline_fake_ratio": demo["fake_ratio"],
                    "demo_pipeline": demo}
        print(f"demo pipeline: int/fp32={demo['int_ratio']:.3f} fake/fp32={demo['fake_ratio']:.3f}", flush=True)
        gc.collect()
    if not args.skip_sd:
        sd = sd_unet(args.repeats)
        figures |= {"sd_unet_ratio": sd["int_ratio"], "sd_unet_fake_ratio": sd["fake_ratio"], "sd_unet": sd,
                    "sd_unet_weight_memory_ratio": sd["memory"]["ratio"]}
        print(f"sd unet: int/fp32={sd['int_ratio']:.3f} fake/fp32={sd['fake_ratio']:.3f} "
              f"weight memory int/fp32={sd['memory']['ratio']:.3f} (int path only {sd['memory']['int_path_ratio']:.3f})")
    figures["whole_model"] = {"repeats": args.repeats, "threads": 1, "wall_s": time.perf_counter() - start}
    def keep_compiled(old: dict, new: dict) -> None:  # an eager rerun keeps the compiled figures
        if "demo_pipeline" in new and "compiled" not in new["demo_pipeline"] and "compiled" in old.get("demo_pipeline", {}):
            new["demo_pipeline"]["compiled"] = old["demo_pipeline"]["compiled"]

    record_case(args.out, "int_kernels", figures, "int_pipeline.py " + " ".join(argv or sys.argv[1:]), keep_compiled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
