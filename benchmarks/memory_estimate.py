"""GPU memory and disk the pipeline needs for SD 1.x and SDXL at the paper's settings: COMPUTED, not measured.

    OMP_NUM_THREADS=1 python benchmarks/memory_estimate.py            # the markdown table of README.md ("Quantize your own Stable Diffusion on a GPU")
    OMP_NUM_THREADS=1 python benchmarks/memory_estimate.py --json     # the raw numbers

How each figure is obtained (no GPU was used):
- Parameters: the real UNet, text encoders and VAE are built from their published configs (written out
  below: CompVis/stable-diffusion-v1-4, stabilityai/stable-diffusion-xl-base-1.0) on the `meta` device,
  which allocates nothing, and their parameters are counted. Weights in memory = count × dtype size.
- Activations: one no-grad forward of that meta UNet (and of the VAE decoder) with a dispatch mode that
  follows every tensor storage the forward allocates and frees (weak references), giving the peak of live
  bytes above the weights. As on CUDA with torch's SDPA in fp16, attention is taken as flash/memory-
  efficient: it allocates its output, never the L×L matrix. Every Conv2d/Linear input is copied once (the
  fake-quantized input) and once more in float32 (statistics), as the quantized UNet and the stats hooks do.
  The caching allocator's fragmentation is not modelled: the table adds 1.5 GiB per GPU (CUDA context +
  allocator slack) and keeps 10% headroom.
- Stores: array shapes × dtype sizes (uncompressed; Blosc barely shrinks float latents).
"""

from __future__ import annotations

import argparse
import json
import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GiB = 2**30
MiB = 2**20
HIST_BINS = 1024  # pcr.stats.running.HIST_BINS (collect always records histograms)
CONTEXT_GIB = 1.5  # CUDA context + allocator slack, assumed
HEADROOM = 0.9  # use at most 90% of the card
GPUS_GIB = (24, 40, 80)

# unet/config.json of CompVis/stable-diffusion-v1-4 (same for 1.5), the keys that shape the model
SD14_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1,
    norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)  # fmt: skip
# unet/config.json of stabilityai/stable-diffusion-xl-base-1.0
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], center_input_sample=False, cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], downsample_padding=1, flip_sin_to_cos=True,
    freq_shift=0, in_channels=4, layers_per_block=2, mid_block_type="UNetMidBlock2DCrossAttn", norm_eps=1e-5, norm_num_groups=32,
    out_channels=4, projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True,
)  # fmt: skip
# vae/config.json (SD 1.4 and SDXL share the architecture; SDXL's VAE must decode in float32)
VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3,
    latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512, up_block_types=["UpDecoderBlock2D"] * 4,
)  # fmt: skip
# CLIP ViT-L/14 text tower (SD 1.x text_encoder, SDXL text_encoder) and OpenCLIP bigG (SDXL text_encoder_2)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")  # fmt: skip
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                 max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")  # fmt: skip


@dataclass(frozen=True)
class Setting:
    name: str
    unet: dict
    text: tuple[dict, ...]  # text encoder configs (the last one of SDXL has a projection)
    side: int  # pixels, the paper's resolution
    steps: int  # UNet calls per sample (PNDM's PLMS: 50 + 1)
    dtype: torch.dtype
    vae_fp32: bool  # the VAE decodes in float32 (SDXL: force_upcast)
    calib_prompts: int = 200
    eval_images: int = 5000  # per prompt set
    prompt_sets: int = 2  # standard + paraphrase


SETTINGS = (
    Setting("SD 1.4, 512 px, PNDM 50 (+1)", SD14_UNET, (CLIP_L,), 512, 51, torch.float16, False),
    Setting("SDXL base, 768 px, Euler 50", SDXL_UNET, (CLIP_L, CLIP_BIGG), 768, 50, torch.float16, True),
    Setting("SDXL base, 1024 px, Euler 50", SDXL_UNET, (CLIP_L, CLIP_BIGG), 1024, 50, torch.float16, True),
)


class LiveBytes(TorchDispatchMode):
    """Peak of the bytes held by the storages that the ops under it allocate (meta tensors too)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: dict[int, int] = {}

    def _free(self, key: int, n: int) -> None:
        self.live -= n
        self._seen.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func._schema.is_mutable:  # views and in-place ops allocate nothing (e.g. t(weight))
            return out
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if id(st) not in self._seen:
                    n = st.nbytes()
                    self._seen[id(st)] = n
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(st, self._free, id(st), n)
        return out


class FlashAttention(TorchFunctionMode):
    """F.scaled_dot_product_attention as flash / memory-efficient attention: only the output is allocated."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2] if len(args) > 2 else kwargs["value"]
            return q.new_empty((*q.shape[:-1], v.shape[-1]))
        return func(*args, **kwargs)


def _quant_hooks(model: nn.Module, shapes: dict[str, tuple]) -> list:
    """Each Conv2d/Linear input: recorded, copied in float32 (stats) and once more (fake-quantized input)."""
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and name not in ("conv_in", "conv_out"):
            def hook(mod, args, name=name):
                x = args[0]
                shapes[name] = tuple(x.shape)
                x.float().amax()  # the statistics' float32 view, freed at once
                return (x * 1,) + tuple(args[1:])
            handles.append(m.register_forward_pre_hook(hook))
    return handles


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def unet_forward_peak(unet, s: Setting, batch: int, shapes: dict) -> int:
    """Peak bytes above the weights of one guided UNet call on `batch` samples (a CFG pair = 2)."""
    h = s.side // 8
    with torch.device("meta"):
        x = torch.empty(batch, 4, h, h, dtype=s.dtype)
        hidden = torch.empty(batch, 77, s.unet["cross_attention_dim"], dtype=s.dtype)
        kw = {}
        if s.unet.get("addition_embed_type") == "text_time":
            kw["added_cond_kwargs"] = {"text_embeds": torch.empty(batch, 1280, dtype=s.dtype),
                                       "time_ids": torch.empty(batch, 6, dtype=s.dtype)}
        t = torch.tensor(999)
        handles = _quant_hooks(unet, shapes)
        try:
            with torch.no_grad(), FlashAttention(), LiveBytes() as mem:
                unet(x, t, encoder_hidden_states=hidden, **kw)
        finally:
            for hd in handles:
                hd.remove()
    return mem.peak


def vae_decode_peak(vae, s: Setting, batch: int) -> int:
    h = s.side // 8
    dtype = torch.float32 if s.vae_fp32 else s.dtype
    with torch.device("meta"), torch.no_grad(), FlashAttention(), LiveBytes() as mem:
        vae.decode(torch.empty(batch, 4, h, h, dtype=dtype))
    return mem.peak


def build(s: Setting):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(s.unet).to(s.dtype).eval()
        vae = AutoencoderKL.from_config({**VAE, "sample_size": s.side}).to(torch.float32 if s.vae_fp32 else s.dtype).eval()
        texts = [(CLIPTextModelWithProjection if (i == 1) else CLIPTextModel)(CLIPTextConfig(**c)) for i, c in enumerate(s.text)]
    return unet, vae, texts


def estimate(s: Setting) -> dict:
    unet, vae, texts = build(s)
    qlayers = [n for n, m in unet.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    elt = torch.finfo(s.dtype).bits // 8
    n_unet, n_vae, n_text = params_of(unet), params_of(vae), sum(params_of(t) for t in texts)
    weights = (n_unet + n_text) * elt + n_vae * (4 if s.vae_fp32 else elt)
    shapes: dict[str, tuple] = {}
    act1, act2 = unet_forward_peak(unet, s, 2, shapes), unet_forward_peak(unet, s, 4, {})
    per_prompt = act2 - act1  # the slope: one more prompt = one more CFG pair
    fixed_act = act1 - per_prompt
    dec1, dec2 = vae_decode_peak(vae, s, 1), vae_decode_peak(vae, s, 2)
    per_image = dec2 - dec1
    fixed_dec = dec1 - per_image

    def gpu_need(batch: int, decode: bool) -> float:
        act = fixed_act + batch * per_prompt
        if decode:  # images are decoded after the batch's sampling loop: not at the same time as the UNet peak
            act = max(act, fixed_dec + batch * per_image)
        return (weights + act) / GiB + CONTEXT_GIB

    def max_batch(cap: int, decode: bool) -> int:
        b = 0
        while b < 4096 and gpu_need(b + 1, decode) <= cap * HEADROOM:
            b += 1
        return b

    T, n, side, sets = s.steps, s.calib_prompts, s.side, s.prompt_sets
    latent = 4 * (side // 8) ** 2 * 4  # one float32 latent
    L = len(qlayers)
    cond = n * 2 * 77 * s.unet["cross_attention_dim"] * 4
    stats = 4 * T * L * 4
    traj = (2 * T + 1) * n * latent + cond + stats + T * L * HIST_BINS * 4
    store_layers = ["down_blocks.0.resnets.0.conv1", "mid_block.attentions.0.proj_in",
                    "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]
    stored_acts = sum(T * 2 * math.prod(shapes[k][1:]) for k in store_layers if k in shapes)  # int8 codes, 2 samples
    calib = (2 * T + 1) * n * latent + stats + stored_acts
    images = s.eval_images * side * side * 3 * sets
    return {
        "setting": s.name,
        "unet_params": n_unet, "text_params": n_text, "vae_params": n_vae, "quant_layers": L,
        "weights_gib": weights / GiB,
        "unet_act_per_prompt_gib": per_prompt / GiB, "unet_act_fixed_gib": fixed_act / GiB,
        "vae_decode_per_image_gib": per_image / GiB,
        "need_gib": {f"b{b}": {"calibrate": gpu_need(b, False), "generate": gpu_need(b, True)} for b in (1, 4, 8, 16, 32)},
        "max_batch": {f"{c}GB": {"calibrate": max_batch(c, False), "generate": max_batch(c, True)} for c in GPUS_GIB},
        "disk_gib": {"trajectories": traj / GiB, "calib": calib / GiB, "reference": images / GiB, "generated": images / GiB},
        "score_host_ram_gib": 3 * s.eval_images * side * side * 3 / GiB,  # reference + generated + real, one set at a time
    }


def table(rows: list[dict]) -> str:
    out = ["| | " + " | ".join(r["setting"] for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]

    def line(label, fn):
        out.append(f"| {label} | " + " | ".join(fn(r) for r in rows) + " |")

    line("UNet / text encoders / VAE parameters", lambda r: f"{r['unet_params'] / 1e6:.0f} M / {r['text_params'] / 1e6:.0f} M / {r['vae_params'] / 1e6:.0f} M")
    line("quantized layers (Conv2d + Linear)", lambda r: str(r["quant_layers"]))
    line("weights on GPU (fp16; SDXL VAE fp32)", lambda r: f"{r['weights_gib']:.2f} GiB")
    line("UNet activations per prompt (CFG pair)", lambda r: f"{r['unet_act_per_prompt_gib']:.2f} GiB")
    line("VAE decode per image", lambda r: f"{r['vae_decode_per_image_gib']:.2f} GiB")
    for b in (1, 8, 16):
        line(f"GPU for calibrate / generate, batch {b}", lambda r, b=b: f"{r['need_gib'][f'b{b}']['calibrate']:.1f} / {r['need_gib'][f'b{b}']['generate']:.1f} GiB")
    for c in GPUS_GIB:
        line(f"largest batch on {c} GB (collect+calibrate / reference+generate)", lambda r, c=c: f"{r['max_batch'][f'{c}GB']['calibrate']} / {r['max_batch'][f'{c}GB']['generate']}")
    line("trajectories.zarr (200 prompts)", lambda r: f"{r['disk_gib']['trajectories']:.2f} GiB")
    line("calib.zarr (200 prompts)", lambda r: f"{r['disk_gib']['calib']:.2f} GiB")
    line("reference.zarr = generated.zarr (2 × 5,000 images)", lambda r: f"{r['disk_gib']['reference']:.1f} GiB")
    line("host RAM in score (3 × 5,000 images)", lambda r: f"{r['score_host_ram_gib']:.1f} GiB")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [estimate(s) for s in SETTINGS]
    print(json.dumps(rows, indent=1) if args.json else table(rows))


if __name__ == "__main__":
    main()
