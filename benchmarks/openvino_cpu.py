#!/usr/bin/env python
"""The CPU route (issue 22): pcr's W8A8 UNet on OpenVINO against torch, OpenVINO's own FP32 / bf16 / NNCF int8.

    pip install -e '.[bench-openvino]'
    python benchmarks/openvino_cpu.py [--repeats 3] [--threads 1 2] [--only speed|quality|w4a8|profile] [--work DIR]
                                      [--quantized outputs/quantized] [--symmetric DIR] [--images 64]
                                      [--out benchmarks/openvino_cpu.json]

speed: the SD 1.5-config UNet2DConditionModel with random weights (seed 0), one forward at 32x32 latents, batch 2,
    timestep 960 (step 0), on one thread and on every core. Routes, timed interleaved (run.py's `interleave`):
      torch_fp32     the float UNet in torch (eager)
      pcr_int        pcr's int kernels (W8A8, params.yaml's quantizer: asymmetric weights, conv_in/conv_out float,
                     random per-step ranges, T=25; as benchmarks/int_pipeline.py)
      pcr_openvino   the same artifact on kernels="openvino" (pcr.quant.kernels.openvino), float parts f32
      pcr_openvino_bf16  the same with the float parts (attention, norms, conv_in/out) in bf16: what the default
                     precision "auto" (OpenVINO's own default) runs on CPUs with AVX512-BF16 or AMX
      pcr_openvino_symmetric[_bf16]  the same UNet and ranges with symmetric weights: no window sums (the
                     cost of params.yaml's asymmetric 8-bit weights, which OpenVINO's int8 kernels take only as
                     q_w - 128 plus a correction by the input's window sums)
      ov_fp32        OpenVINO on the float UNet, INFERENCE_PRECISION_HINT f32
      ov_bf16        OpenVINO's default precision on this CPU (bf16)
      nncf_int8      OpenVINO + NNCF int8 (nncf.quantize, ModelType.TRANSFORMER: SmoothQuant, fast bias correction),
                     calibrated on random inputs (speed does not depend on the calibration), default precision
    Ratios are paired: the median over repeats of t / t_ref within one round, with a 95% bootstrap interval over
    the rounds for the ratios to NNCF int8.
quality: the demo pipeline (data/demo/pipeline), the first --images eval prompts with seeds 1000 + i, DDIM 25
    steps as the artifact's scheduler says, guidance 4.5. pcr's W8A8 progressive artifact (--quantized; and with
    --symmetric the same pipeline run with quant.weight_symmetric: true) on kernels fake and openvino with f32 and bf16
    float parts; NNCF int8 of the demo's float UNet (ModelType.TRANSFORMER), calibrated on the UNet inputs of the
    FP32 pipeline over data/prompts/calibration.txt (the first 32 prompts, collect's seeds), run on OpenVINO f32.
    Per image PSNR to the FP32 images; paired differences with a 95% BCa bootstrap interval (pcr.metrics.bootstrap,
    the intervals score reports); agreement of each openvino route with its fake (mean, worst).
w4a8: a W4A8 demo artifact (4-bit weights, fp32 min/max per-step ranges) on openvino against fake (--images / 2).
profile: where the time goes, after speed (its --work models): OpenVINO's per-node counters of pcr's fastest route
    (symmetric weights, bf16) and NNCF int8, one thread, ms per inference by part (convolutions, fully
    connected, attention, other fused elementwise subgraphs, reorders and transposes, the step-table gathers).
Writes each section into --out (JSON) with the command that made it, keeping the other sections.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers import ModelMixin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int_kernels import SD15  # noqa: E402
from int_pipeline import QCFG  # noqa: E402
from run import interleave, machine, median, paired_ratio, paired_ratio_ci  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data/demo/pipeline"
CALIBRATION_PROMPTS, CALIBRATION_COUNT, CALIBRATION_SEED = ROOT / "data/prompts/calibration.txt", 32, 0  # params.yaml collect
EVAL_PROMPTS, EVAL_SEED, GUIDANCE = ROOT / "data/prompts/eval.txt", 1000, 4.5
NNCF_SUBSET = 300  # nncf.quantize's default subset size


class FloatWrapper(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


def to_openvino(unet, example: dict):
    import openvino as ov

    model = ov.convert_model(FloatWrapper(unet).eval(), example_input=example)
    for port, name in zip(model.inputs, example, strict=True):
        port.get_tensor().set_names({name})
    return model


def nncf_int8(model, samples: list[dict]):
    import nncf

    return nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=min(NNCF_SUBSET, len(samples)))


def compile_ov(model, threads: int, precision: str | None, shapes: dict | None = None):
    import openvino as ov

    if shapes is not None:
        model.reshape(shapes)
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return ov.Core().compile_model(model, "CPU", config)


def runtime_precisions(compiled) -> dict:
    """Executed Convolution / FullyConnected / MatMul nodes by runtime precision (the executed graph)."""
    from pcr.quant.kernels.openvino import executed_kernels

    return dict(Counter(f"{kind}:{precision}" for kind, precision in executed_kernels(compiled).values()))


def export_in_child(artifact: Path, out: Path) -> float:
    """export_openvino in a child process, so the memory of tracing the SD UNet goes back to the OS before the float
    models are built (in this process one run of this section was killed for memory at 24 GB); its seconds."""
    code = "import sys; from pcr.quant.kernels.openvino import export_openvino; export_openvino(sys.argv[1], sys.argv[2])"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(artifact), str(out)], check=True)
    return time.perf_counter() - start


def sd15_feed(g: torch.Generator) -> dict[str, np.ndarray]:
    """The UNet inputs both sections time: 32x32 latents, batch 2, 77 text tokens, timestep 960 (step 0)."""
    return {"sample": torch.randn(2, 4, 32, 32, generator=g).numpy(), "timestep": np.array([960.0], np.float32),
            "encoder_hidden_states": torch.randn(2, 77, SD15["cross_attention_dim"], generator=g).numpy()}


@torch.no_grad()
def speed(repeats: int, threads: list[int], tmp: Path, save=lambda out: None) -> dict:
    import openvino as ov
    from diffusers import UNet2DConditionModel

    from pcr.quant import qmodules, quantize_model, save_quantized
    from pcr.quant.kernels import use_kernels
    from pcr.quant.kernels.openvino import OpenVINOUNet
    from pcr.quant.qmap import QuantMap

    timesteps = [float(t) for t in range(960, -1, -40)]  # T = 25
    g = torch.Generator().manual_seed(0)
    feed = sd15_feed(g)
    x, c, t = (torch.from_numpy(feed[k]) for k in ("sample", "encoder_hidden_states", "timestep"))
    step_feed = {**feed, "step": np.zeros(1, dtype=np.int64)}
    calib = [{k: torch.randn(v.shape, generator=g).numpy() if k != "timestep" else np.array([ts], np.float32)
              for k, v in feed.items()} for ts in timesteps[::3]]
    ranges = g.get_state()
    irs, export_s = {}, {}  # pcr's exports first, before the float models: the peak memory of one process
    for weights, symmetric in (("", False), ("_symmetric", True)):  # params.yaml's asymmetric weights; symmetric: no window sums
        torch.manual_seed(0)
        g.set_state(ranges)  # the same per-step ranges for both
        q = UNet2DConditionModel(**SD15).eval()
        qmap = quantize_model(q, replace(QCFG, weight_symmetric=symmetric), timesteps)
        for m in qmodules(q).values():
            for k in range(len(timesteps)):
                m.input_quant.set_step(k, -1 - 3 * torch.rand((), generator=g), 1 + 3 * torch.rand((), generator=g))
        artifact = tmp / f"sd15{weights}_quantized"
        if not artifact.is_dir():
            save_quantized(q, QuantMap(qmap.num_steps, qmap.weight_observer, qmap.act_observer, qmap.layers, meta={}), artifact)
        irs[weights] = tmp / f"sd15{weights}_openvino"
        export_s[weights or "asymmetric"] = export_in_child(artifact, irs[weights])
        if not symmetric:
            q_int = q  # pcr_int: params.yaml's quantizer
    q = q_int
    gc.collect()
    torch.manual_seed(0)
    fp32 = UNet2DConditionModel(**SD15).eval()
    start = time.perf_counter()
    ov_fp32 = to_openvino(fp32, {k: torch.from_numpy(v) for k, v in feed.items()})
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    saved = tmp / "sd15_nncf_int8.xml"  # --work keeps it: a rerun skips the 5-10 minutes of nncf.quantize
    if saved.is_file():
        ov_int8, nncf_s = ov.Core().read_model(saved), json.loads(saved.with_suffix(".json").read_text())["nncf_quantize_s"]
    else:
        ov_int8 = nncf_int8(ov_fp32, calib)
        nncf_s = time.perf_counter() - start
        ov.save_model(ov_int8, saved, compress_to_fp16=False)
        saved.with_suffix(".json").write_text(json.dumps({"nncf_quantize_s": nncf_s}))
        ov_int8 = ov.Core().read_model(saved)  # the quantized model as a user loads it
    print(f"sd_unet: convert {convert_s:.0f} s, nncf.quantize {nncf_s:.0f} s ({len(calib)} samples)", flush=True)
    summary = use_kernels(q, "int")
    print(f"sd_unet: pcr export {export_s} s; int: {summary['int']} layers int, {summary['fake']} fake", flush=True)
    out = {"latent": 32, "batch": 2, "steps": len(timesteps), "convert_s": convert_s, "nncf_quantize_s": nncf_s,
           "nncf_calibration_samples": len(calib), "pcr_export_s": export_s, "by_threads": {}}
    for n in threads:
        torch.set_num_threads(n)
        pcr_ov = {f"pcr_openvino{w}{'' if p == 'f32' else '_' + p}": OpenVINOUNet.load(ir, threads=n, precision=p)
                  for w, ir in irs.items() for p in ("f32", "bf16")}
        shapes = {k: v.shape for k, v in feed.items()}
        compiled = {"ov_fp32": compile_ov(ov_fp32, n, "f32", shapes), "ov_bf16": compile_ov(ov_fp32, n, None, shapes),
                    "nncf_int8": compile_ov(ov_int8, n, None, shapes)}
        requests = {k: v.create_infer_request() for k, v in compiled.items()}
        fns = {"torch_fp32": lambda: fp32(x, t, encoder_hidden_states=c),
               "pcr_int": lambda: q(x, t, encoder_hidden_states=c),
               **{k: (lambda u=u: u.run(step_feed)) for k, u in pcr_ov.items()},
               **{k: (lambda r=r: r.infer(feed)) for k, r in requests.items()}}
        for fn in fns.values():  # warm-up
            fn()
        times = interleave(fns, repeats)
        ms = {k: 1e3 * median(v) for k, v in times.items()}
        ratios = {k: paired_ratio(v, times["torch_fp32"]) for k, v in times.items() if k != "torch_fp32"}
        vs_nncf = {k: paired_ratio(v, times["nncf_int8"]) for k, v in times.items() if k.startswith("pcr")}
        vs_nncf_ci = {k: paired_ratio_ci(v, times["nncf_int8"]) for k, v in times.items() if k.startswith("pcr")}
        prec = {k: runtime_precisions(v) for k, v in [*((k, u.compiled) for k, u in pcr_ov.items()), *compiled.items()]}
        print(f"threads={n}: " + " ".join(f"{k}={v:.0f}ms" for k, v in ms.items()), flush=True)
        print("  / torch_fp32: " + " ".join(f"{k}={v:.3f}" for k, v in ratios.items()), flush=True)
        print("  / nncf_int8:  " + " ".join(f"{k}={v:.3f} [{vs_nncf_ci[k][0]:.3f}, {vs_nncf_ci[k][1]:.3f}]"
                                             for k, v in vs_nncf.items()), flush=True)
        out["by_threads"][str(n)] = {"ms": ms, "ratio_to_torch_fp32": ratios, "ratio_to_nncf_int8": vs_nncf, "ratio_to_nncf_int8_ci95": vs_nncf_ci,
                                     "runtime_precisions": prec, "times_s": times}
        save(out)
        del pcr_ov, compiled, requests, fns, times  # the lambdas hold the compiled models: free them before the next
        gc.collect()
    return out


PARTS = {  # what a profile row is: (executed node type, a substring of the node's name or "")
    "convolutions": [("Convolution", "")],  # pcr: conv_in and conv_out in bf16, the rest u8 x i8
    "fully connected": [("FullyConnected", ""), ("FullyConnectedQuantizedLegacy", "")],
    "attention (MHA subgraphs)": [("Subgraph", "scaled_dot_product_attention")],
    "other fused elementwise subgraphs": [("Subgraph", "")],
    "reorders and transposes": [("Reorder", ""), ("Transpose", "")],
    "step-table gathers": [("Gather", "")],
}


def part_of(node_type: str, name: str) -> str:
    for part, kinds in PARTS.items():
        if any(node_type == t and sub in name for t, sub in kinds):
            return part
    return "other"


def profile(tmp: Path, rounds: int = 5) -> dict:
    """Where the time goes: OpenVINO's per-node counters (PERF_COUNT) of pcr's fastest route (symmetric weights, bf16)
    and NNCF int8, one thread, on the speed section's models (its --work folder), ms per inference by part."""
    import openvino as ov

    models = {"pcr_openvino_symmetric_bf16": tmp / "sd15_symmetric_openvino" / "unet.xml", "nncf_int8": tmp / "sd15_nncf_int8.xml"}
    missing = [str(m) for m in models.values() if not m.is_file()]
    if missing:
        raise SystemExit(f"--only profile reads the speed section's models, missing: {missing}; run --only speed --work {tmp} first")
    feed = sd15_feed(torch.Generator().manual_seed(0))
    requests, inputs = {}, {}
    for key, path in models.items():
        model = ov.Core().read_model(path)
        inputs[key] = {**feed, "step": np.zeros(1, np.int64)} if key.startswith("pcr") else feed
        model.reshape({k: v.shape for k, v in inputs[key].items()})
        requests[key] = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
            "INFERENCE_PRECISION_HINT": "bf16"}).create_infer_request()
        requests[key].infer(inputs[key])  # warm-up
    ms = {key: {} for key in models}
    nodes = {key: {} for key in models}
    for _ in range(rounds):  # interleaved, as the speed section: drift of the machine falls on both alike
        for key, request in requests.items():
            request.infer(inputs[key])
            for p in request.profiling_info:
                if p.status == p.Status.EXECUTED:
                    part = part_of(p.node_type, p.node_name)
                    ms[key][part] = ms[key].get(part, 0.0) + p.real_time.total_seconds() * 1e3 / rounds
                    nodes[key][part] = nodes[key].get(part, 0) + 1
    out = {key: {"total_ms": sum(ms[key].values()), "ms": ms[key], "nodes": {k: v // rounds for k, v in nodes[key].items()}}
           for key in models}
    print("profile, ms per inference (nodes):", flush=True)
    for part in [*PARTS, "other"]:
        print(f"  {part:36s} " + "  ".join(f"{k} {v['ms'].get(part, 0):7.1f} ({v['nodes'].get(part, 0)})" for k, v in out.items()))
    print("  total                                " + "  ".join(f"{k} {v['total_ms']:7.1f}" for k, v in out.items()), flush=True)
    return {"rounds": rounds, "threads": 1, "precision_hint": "bf16", "by_model": out}


def first_lines(path: Path, n: int) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()][:n]


class OVFloatUNet(ModelMixin):
    """A float OpenVINO UNet (the NNCF model) as a pipeline's UNet."""

    def __init__(self, compiled, config):
        super().__init__()
        self.compiled, self.request, self.config = compiled, compiled.create_infer_request(), config

    device = property(lambda self: torch.device("cpu"))
    dtype = property(lambda self: torch.float32)

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True, **unused):
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[:1]
        y = self.request.infer({"sample": sample.numpy(), "timestep": t.numpy(),
                                "encoder_hidden_states": encoder_hidden_states.numpy()})[self.compiled.outputs[0]]
        return (torch.from_numpy(y.copy()),)


def generate(pipe, prompts: list[str], seed: int, steps: int, batch: int = 16) -> np.ndarray:
    """uint8 images [N, H, W, 3]; image i from noise seeded seed + i."""
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i + j)) for j in range(len(chunk))])
        images = pipe(chunk, latents=latents, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="np").images
        out.append((np.asarray(images) * 255).round().astype(np.uint8))
    return np.concatenate(out)


@torch.no_grad()
def calibration_inputs(pipe, prompts: list[str], seed: int, steps: int) -> list[dict]:
    """Every UNet call's inputs of the FP32 pipeline over the calibration prompts (each CFG pair one sample)."""
    samples: list[dict] = []

    def hook(module, args, kwargs):
        t = torch.as_tensor(args[1] if len(args) > 1 else kwargs["timestep"], dtype=torch.float32).reshape(-1)[:1]
        samples.append({"sample": args[0].numpy().copy(), "timestep": t.numpy(),
                        "encoder_hidden_states": kwargs["encoder_hidden_states"].numpy().copy()})

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        generate(pipe, prompts, seed, steps, batch=1)
    finally:
        handle.remove()
    return samples


def paired(a: np.ndarray, b: np.ndarray, replicates: int = 1000, seed: int = 0) -> dict:
    """Mean of a, of b and of a - b per image, each (estimate, lo, hi): 95% BCa bootstrap, pcr.metrics's."""
    from pcr.metrics.bootstrap import difference, intervals, weighted_mean

    stats = {"a": weighted_mean(a), "b": weighted_mean(b)}
    stats["a_minus_b"] = difference(stats["a"], stats["b"])
    est = intervals(stats, len(a), replicates, seed)
    return {k: {"mean": v[0], "ci95": [v[1], v[2]]} for k, v in est.items()} | {
        "significant": bool(est["a_minus_b"][1] > 0 or est["a_minus_b"][2] < 0)}


@torch.no_grad()
def quality(artifacts: dict[str, Path], n_images: int, threads: int) -> dict:
    """artifacts: label suffix -> pcr artifact ("" for params.yaml's, "_symmetric" for symmetric weights)."""
    from diffusers import StableDiffusionPipeline

    import pcr
    from pcr.metrics.image import psnr_per_image
    from pcr.quant.qmap import QuantMap
    from pcr.quant.serialize import QUANT_CONFIG

    torch.set_num_threads(threads)
    prompts = first_lines(EVAL_PROMPTS, n_images)
    fp32 = StableDiffusionPipeline.from_pretrained(DEMO, safety_checker=None, requires_safety_checker=False)
    images, qmaps, compiled, start = {}, {}, {}, time.perf_counter()
    for w, quantized in artifacts.items():
        qmaps[w] = QuantMap.load(quantized / QUANT_CONFIG)
        fake = pcr.load_pipeline(DEMO, quantized)
        fp32.scheduler, steps = fake.scheduler, fake.unet.pcr_step.num_inference_steps  # every artifact: the demo's scheduler
        images[f"pcr{w}_fake"] = generate(fake, prompts, EVAL_SEED, steps)
        for p in ("f32", "bf16"):
            pipe, key = pcr.load_pipeline(DEMO, quantized, kernels="openvino", openvino_precision=p), f"pcr{w}_openvino{'' if p == 'f32' else '_bf16'}"
            images[key], compiled[key] = generate(pipe, prompts, EVAL_SEED, steps), pipe.unet.compiled
    images["fp32"] = generate(fp32, prompts, EVAL_SEED, steps)
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    calib = calibration_inputs(fp32, first_lines(CALIBRATION_PROMPTS, CALIBRATION_COUNT), CALIBRATION_SEED, steps)
    example = {k: torch.from_numpy(v) for k, v in calib[0].items()}
    int8 = nncf_int8(to_openvino(fp32.unet, example), calib)
    nncf_s = time.perf_counter() - start
    nncf_unet = OVFloatUNet(compile_ov(int8, threads, "f32"), fp32.unet.config)
    compiled["nncf_int8"] = nncf_unet.compiled
    images["nncf_int8"] = generate(StableDiffusionPipeline(**{**fp32.components, "unet": nncf_unet}), prompts, EVAL_SEED, steps)
    psnr = {k: psnr_per_image(v, images["fp32"]) for k, v in images.items() if k != "fp32"}
    stat = lambda a: {"mean": float(a.mean()), "worst": float(a.min())}  # noqa: E731
    out = {"artifacts": {w or "params.yaml": {"path": str(q), "schedule_bits": sorted(set(qmaps[w].meta.get("schedule", {}).get("bits", []))),
                                             "weight_bits": sorted({s.weight_bits for s in qmaps[w].layers.values()}),
                                             "weight_symmetric": sorted({s.weight_symmetric for s in qmaps[w].layers.values()})}
                         for w, q in artifacts.items()},
           "images": len(prompts), "steps": steps, "generate_s": gen_s, "nncf_s": nncf_s, "nncf_calibration_samples": len(calib),
           "psnr_to_fp32": {k: stat(v) for k, v in psnr.items()},
           "vs_fake_psnr": {k: stat(psnr_per_image(images[k], images[f"pcr{w}_fake"]))
                            for w in artifacts for k in (f"pcr{w}_openvino", f"pcr{w}_openvino_bf16")},
           "paired": {f"{k}_minus_nncf_int8": paired(psnr[k], psnr["nncf_int8"]) for k in psnr if k.startswith("pcr")},
           "runtime_precisions": {k: runtime_precisions(v) for k, v in compiled.items()}}
    if "_symmetric" in artifacts:  # what symmetric weights cost on the demo, paired per image
        out["paired"] |= {f"pcr_symmetric{r}_minus_pcr{r}": paired(psnr[f"pcr_symmetric{r}"], psnr[f"pcr{r}"])
                          for r in ("_fake", "_openvino_bf16")}
    print(json.dumps({k: out[k] for k in ("psnr_to_fp32", "vs_fake_psnr")}))
    print(json.dumps({k: {"mean": v["a_minus_b"]["mean"], "ci95": v["a_minus_b"]["ci95"]} for k, v in out["paired"].items()}))
    return out


@torch.no_grad()
def w4a8(n_images: int) -> dict:
    """W4A8 deploys: the demo UNet with 4-bit weights (per-step fp32 min/max ranges, int_pipeline.py's demo
    artifact) on kernels openvino against fake, per image PSNR."""
    import int_pipeline

    import pcr
    from pcr.metrics.image import psnr_per_image

    torch.set_num_threads(1)
    int_pipeline.QCFG = replace(QCFG, weight_bits=4)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = int_pipeline.demo_artifact(Path(tmp) / "w4a8")
        fake = pcr.load_pipeline(DEMO, artifact)
        ov_pipe = pcr.load_pipeline(DEMO, artifact, kernels="openvino", openvino_dir=Path(tmp) / "ir", openvino_precision="f32")
        steps, prompts = fake.unet.pcr_step.num_inference_steps, first_lines(EVAL_PROMPTS, n_images)
        agree = psnr_per_image(generate(ov_pipe, prompts, EVAL_SEED, steps), generate(fake, prompts, EVAL_SEED, steps))
        summary = ov_pipe.unet.pcr_kernels
    return {"openvino_vs_fake_psnr": {"mean": float(agree.mean()), "worst": float(agree.min())}, "images": len(agree),
            "layers_int8": summary["int"], "layers_fake": summary["fake"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", choices=["speed", "quality", "w4a8", "profile"], default=None)
    ap.add_argument("--quantized", type=Path, default=ROOT / "outputs/quantized", help="pcr's W8A8 progressive demo artifact")
    ap.add_argument("--symmetric", type=Path, default=None,
                    help="quality: the same with quant.weight_symmetric: true (dvc exp run -S quant.weight_symmetric=true)")
    ap.add_argument("--images", type=int, default=64, help="demo images (eval prompts) for quality")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/openvino_cpu.json")
    ap.add_argument("--work", type=Path, default=None, help="keep the SD artifact, its IR and the NNCF model here (reruns reuse them)")
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    command = "python benchmarks/openvino_cpu.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def save(key, value):  # each section records the command and time that made it (--only reruns one)
        results[key] = {**value, "command": command, "at": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(1)}
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "quality"):
            artifacts = {"": args.quantized} | ({"_symmetric": args.symmetric} if args.symmetric else {})
            save("quality", quality(artifacts, args.images, 1))
        if args.only in (None, "w4a8"):
            save("w4a8", w4a8(args.images // 2))
        if args.only in (None, "speed"):
            save("speed", speed(args.repeats, args.threads, work, lambda out: save("speed", out)))
        if args.only in (None, "profile"):  # after speed: its models
            save("profile", profile(work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
