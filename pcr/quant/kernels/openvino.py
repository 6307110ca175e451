"""The CPU deployment route: the quantized UNet as one OpenVINO model, integer convolutions and matmuls.

    ir = export_openvino("outputs/quantized")        # IR cached by the artifact's hash (or in `out`)
    unet = OpenVINOUNet.load(ir, threads=1)          # a drop-in `pipe.unet`: stock pipeline, same step counter
    pipe = pcr.load_pipeline(model, "outputs/quantized", kernels="openvino")   # both in one call

The export is a function of the artifact only (load_quantized, never the calibration objects). Every
quantized layer becomes, with k the step index (a model input, gathered from per-step tables: one
compiled model serves every step), u = q - q_min the unsigned b-bit codes, z_k the step's zero point in u codes and
c the layer's median z_k (a constant):

    x' = x (1/s_k) + z_k
    u  = FakeQuantize(min(x', 2^b - 1), [0, 255], 256 levels)   constant range: OpenVINO's low-precision
                                                           transformations make it a u8 tensor
    y' = conv / matmul(u, w' s_w) - c R'                   int8 weights w', per-channel scale: u8 x i8, with the
                                                           constant bias -c R' (R' = rowsum of w' s_w) added in the
                                                           kernel; the conv zero-pads u itself (no Pad node)
    y  = s_k (y' - s_w d_w S_c) + (b - s_k (z_k - c) R)    linear, unpadded conv: R = rowsum of W_hat, a [T, C] table
    y  = s_k (y' - s_w d_w S_c - (z_k - c) R_in - c (R'_in - R')) + b
                                                           padded conv: R_in[o, h, w] = the sum of W_hat[o] over the
                                                           window positions inside the input at output (h, w), R'_in
                                                           the same of w' s_w; R'_in - R' is 0 but at the border

    sum_i (q_i - z) W_hat_oi = s_w[o] (sum_i (u_i - c) w'_oi - d_w[o] S_c) - (z_k - c) R_o,  W_hat = s_w (w' - d_w)

with S_c the window sum of u - c, summed over the window positions inside the input (a padded x = 0 has q = z: no
term); with u zero-padded, the conv sums over the inside positions only, hence R_in and R'_in (convs of ones over the
input's [H, W] with the weights summed over input channels, the conv's stride, padding, dilation: constants once the
compiled shapes are static; grouped convs alike, as every output channel sums its own group).
Why the bias (format 3): without it (format 2) the kernel's output carried z_k R, which only the float correction
after the kernel took away again; with bf16 float parts that cancellation lost most of an output's bits where R is
large (padded convs with weights of a large per-channel sum: 11-14% relative error, tests). The bias is added in
float32 inside the kernel, before its output is stored, so what leaves the kernel is about sum (u - z_k) w; only the
remainder (z_k - c) R, small where the zero point moves little over the steps, and the border term go through the
float rescale.
w' = q_w - z_w when it fits int8 (symmetric or <= 7-bit weights, d_w = 0), else q_w - 128 with d_w =
z_w - 128 (OpenVINO's CPU plugin runs no int8 kernel with weight zero points).
Layers the route cannot run exactly in int8 (a step above 8 bits, grouped convolutions with 8-bit
asymmetric weights, activation quantizer off) stay fake-quantized inside the same model, in float32, by
name in the summary. The float parts run at OpenVINO's default precision for the CPU (`precision="auto"`, the
default: bf16 on CPUs with AVX512-BF16 or AMX, the fast setting, else f32), in float32 (`"f32"`: the closest
agreement with `fake`) or bf16 (`"bf16"`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import FrozenDict
from torch import Tensor, nn

from pcr.errors import StoreError
from pcr.quant.bits import qrange
from pcr.quant.correction import StepAffineConv2d
from pcr.quant.modules import QConv2d, QLinear, QModuleMixin
from pcr.quant.serialize import ARTIFACT_FILES, load_quantized
from pcr.quant.step import STEP_COUNTER, StepCounter, step_counter

EXTRA = "openvino"  # pyproject optional extra
IR_XML, IR_BIN, IR_META = "unet.xml", "unet.bin", "pcr_openvino.json"
FORMAT = "pcr-openvino-unet"
FORMAT_VERSION = 4  # 2: padded convs zero-pad the u codes (no Pad nodes), R_in corrects the border; 3: the kernel's bias -c R';
# 4: per-step scalars at the tensor's rank (fewer layout reorders)
INT8_MAX_BITS = 8
U8_TOP = 255
PRECISIONS = {"auto": None, "f32": "f32", "bf16": "bf16"}  # auto: OpenVINO's default for the CPU (bf16 where it has
# AVX512-BF16 or AMX, else f32), the precision OpenVINO's own int8 models run at
N_TIME_IDS = 6  # SDXL time ids: original size, crop top-left, target size
KERNEL_LAYERS = ("Convolution", "FullyConnected", "MatMul")  # executed layer types that carry the weights


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed: choose one of {list(PRECISIONS)}")


def executed_kernels(compiled) -> dict[str, tuple[str, str]]:
    """The convolutions and matmuls OpenVINO's CPU plugin runs (its executed graph, not the IR): name -> (layer
    type, runtime precision); "u8" / "i8" is an int8 kernel, "bf16" / "f32" a float one."""
    out = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in KERNEL_LAYERS:
            out[op.get_friendly_name()] = (kind, info["runtimePrecision"].astype(str))
    return out


def require_openvino():
    """The openvino module, or an ImportError naming the extra to install."""
    try:
        import openvino
    except ImportError:
        raise ImportError(f"kernels='openvino' needs OpenVINO: pip install 'pcr[{EXTRA}]' (or pip install openvino)") from None
    return openvino


class _StepInput:
    """The traced step index tensor, shared by every export layer of one trace (read in forward); `index`, as a
    StepCounter's, for the corrected output layer (pcr.quant.correction), which reads its rows the same way."""

    k: Tensor | None = None

    @property
    def index(self) -> Tensor | None:
        return self.k


def _weight_int8(m: QModuleMixin) -> tuple[Tensor, Tensor]:
    """(w' int8 [C_out, ...], d_w [C_out] float): W_hat = s_w (w' - d_w)."""
    q = m.codes().to(torch.int32)
    z = m.weight_zero_point.reshape(-1, *[1] * (q.dim() - 1)).to(torch.int32)
    if m.weight_symmetric or m.weight_bits <= 7:
        return (q - z).to(torch.int8), torch.zeros(q.shape[0])
    return (q - 128).to(torch.int8), (z.reshape(-1) - 128).float()


def int8_support(m: QModuleMixin) -> tuple[bool, str]:
    """(True, "") when the route runs layer m as u8 x i8, else (False, why): it then stays fake (float32)."""
    a = m.input_quant
    if not a.enabled:
        return False, "its activation quantizer is disabled (float inputs)"
    if m.weight_bits > INT8_MAX_BITS:
        return False, f"weight_bits={m.weight_bits}: int8 weights need <= 8 bits"
    bits = a.bits.tolist()
    if max(bits) > INT8_MAX_BITS:
        return False, f"step {bits.index(max(bits))} runs {max(bits)}-bit activations: u8 codes hold <= 8 bits"
    if isinstance(m, QConv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return False, f"padding={m.padding!r}, padding_mode={m.padding_mode!r}: zero padding by numbers only"
        if m.groups > 1 and not (m.weight_symmetric or m.weight_bits <= 7):
            return False, "grouped convolution with 8-bit asymmetric weights (no per-group window sums)"
    return True, ""


class ExportLayer(nn.Module):
    """What one QLinear / QConv2d becomes in the exported graph (see the module docstring)."""

    def __init__(self, m: QModuleMixin, step: _StepInput):
        super().__init__()
        self.step_input, self.conv = step, isinstance(m, QConv2d)
        if self.conv:
            self.stride, self.padding, self.dilation, self.groups = m.stride, m.padding, m.dilation, m.groups
        self.padded = self.conv and any(self.padding)  # int8: the conv zero-pads u, R_in corrects (module docstring)
        a = m.input_quant
        self.int8, self.why = int8_support(m)
        bias = m.bias.detach().float() if m.bias is not None else torch.zeros(m.weight_scale.numel())
        s = a.scale.detach().float()  # [T]
        q_min = torch.tensor([qrange(int(b), a.symmetric)[0] for b in a.bits.tolist()])
        q_max = torch.tensor([qrange(int(b), a.symmetric)[1] for b in a.bits.tolist()])
        z = a.zero_point.detach().long()
        self.register_buffer("inv_scale", 1.0 / s)  # float32 1/s, as fake_quantize computes it
        self.register_buffer("scale", s)
        if not self.int8:  # fake quantization in float: x_hat = clamp(round(x / s), q_min - z, q_max - z) s
            self.register_buffer("lo", (q_min - z).float())
            self.register_buffer("hi", (q_max - z).float())
            self.register_buffer("weight", m.dequantized_weight(torch.float32))
            self.register_buffer("bias", bias)
            return
        w8, dw = _weight_int8(m)
        sw = m.weight_scale.detach().float()
        shape = (-1,) + (1,) * (w8.dim() - 1)
        w_hat = (w8.float() - dw.reshape(shape)) * sw.reshape(shape)
        zu = (z - q_min).float()  # zero point of the unsigned codes u = q - q_min
        top = (q_max - q_min).float()  # largest unsigned code per step: 2^b - 1
        # one 256-level FakeQuantize (fewer levels are not taken for u8 by OpenVINO); narrower codes clamped before it
        self.top = None if bool((top == U8_TOP).all()) else float(top[0]) if bool((top == top[0]).all()) else top
        self.c = float(zu.median().round())  # the layer's constant code (module docstring)
        w_s = w8.float() * sw.reshape(shape)  # w' s_w
        self.register_buffer("zu", zu)
        self.register_buffer("zu_rest", zu - self.c)  # z_k - c
        self.register_buffer("w8", w8)
        self.register_buffer("w_scale", sw)
        self.register_buffer("beta", -self.c * w_s.flatten(1).sum(1))  # the kernel's bias: -c R'
        self.weight_zp = bool(dw.abs().max() > 0)
        self.register_buffer("zp_scale", sw * dw if self.weight_zp else torch.zeros(0))
        if self.weight_zp and self.conv:
            self.register_buffer("ones", torch.ones(1, 1, *w8.shape[2:]))
        if self.padded:  # W_hat and w' s_w summed over input channels, for R_in and R'_in
            self.register_buffer("w_rowsum", w_hat.sum(1, keepdim=True))  # [C_out, 1, kh, kw]
            self.register_buffer("c_ws_rowsum", self.c * w_s.sum(1, keepdim=True))  # c R'_in comes from it
            self.register_buffer("bias", bias)
        else:  # b - s_k (z_k - c) R per step, R = rowsum of W_hat
            r = w_hat.flatten(1).sum(1)  # [C_out]
            self.register_buffer("offset", bias[None, :] - (s * (zu - self.c))[:, None] * r[None, :])  # [T, C_out]

    def _op(self, x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
        if self.conv:
            return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation, self.groups)
        return F.linear(x, w, bias)

    def _valid_rowsum(self, x: Tensor, rowsum: Tensor) -> Tensor:
        """[1, C_out, H_out, W_out]: per output position, `rowsum` [C_out, 1, kh, kw] summed over the window positions
        inside x (from x's shape only: a constant of the compiled model once its shapes are static)."""
        ones = x.new_ones((1, 1, x.shape[-2], x.shape[-1]))
        return F.conv2d(ones, rowsum, None, self.stride, self.padding, self.dilation)

    def step_scalar(self, table: Tensor, x: Tensor) -> Tensor:
        """table[k] shaped [1] * x.dim(): a scalar of the tensor's rank keeps the per-step rescale in the conv's
        channels-last layout (a [1] scalar made OpenVINO reorder every conv output to planar and transpose the
        attention blocks' inputs: format 4)."""
        return table.index_select(0, self.step_input.k).reshape((1,) * x.dim())

    def forward(self, x: Tensor) -> Tensor:
        k = self.step_input.k  # [1] int64

        def at(table: Tensor) -> Tensor:
            return self.step_scalar(table, x)

        if not self.int8:  # zero padding by the conv: a padded 0 is the code 0 in float
            c = torch.round(x * at(self.inv_scale))
            c = torch.minimum(torch.maximum(c, at(self.lo)), at(self.hi))
            return self._op(c * at(self.scale), self.weight, self.bias)
        xu = x * at(self.inv_scale) + at(self.zu)
        if isinstance(self.top, float):
            xu = xu.clamp(max=self.top)
        elif self.top is not None:
            xu = torch.minimum(xu, at(self.top))
        u = torch.fake_quantize_per_tensor_affine(xu, 1.0, 0, 0, U8_TOP)  # constant range [0, 255]: u8
        shape = (-1,) + (1,) * (self.w8.dim() - 1)
        y = self._op(u, self.w8.float() * self.w_scale.reshape(shape), self.beta)  # u8 x i8 with bias -c R': y'
        if self.weight_zp:  # s_w d_w S_c, S_c: window sums of u - c (zero-padded)
            if self.conv:
                u_sum = u.sum(1, keepdim=True) - self.c * u.shape[1]
                y = y - F.conv2d(u_sum, self.ones, None, self.stride, self.padding, self.dilation) * self.zp_scale.reshape(1, -1, 1, 1)
            else:
                y = y - (u.sum(-1, keepdim=True) - self.c * u.shape[-1]) * self.zp_scale
        if self.padded:  # s_k (y' - (z_k - c) R_in - c (R'_in - R')) + b: padded codes are 0, not c
            border = self._valid_rowsum(x, self.c_ws_rowsum) + self.beta.reshape(1, -1, 1, 1)  # c (R'_in - R'), beta = -c R'; 0 but at the border
            y = y - (at(self.zu_rest) * self._valid_rowsum(x, self.w_rowsum) + border)
            return y * at(self.scale) + self.bias.reshape(1, -1, 1, 1)
        offset = self.offset.index_select(0, k)  # [1, C_out]
        if self.conv:
            offset = offset.reshape(1, -1, 1, 1)
        return y * at(self.scale) + offset


class ExportUNet(nn.Module):
    """The quantized UNet with the step index as an input: (sample, timestep, encoder_hidden_states, step[, text_embeds, time_ids])."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.step_input = _StepInput()
        self.summary = {"int": 0, "fake": 0, "fallback": {}}
        for name, m in list(unet.named_modules()):
            if isinstance(m, QLinear | QConv2d):
                layer = ExportLayer(m, self.step_input)
                parent, _, child = name.rpartition(".")
                setattr(unet.get_submodule(parent) if parent else unet, child, layer)
                if layer.int8:
                    self.summary["int"] += 1
                else:
                    self.summary["fake"] += 1
                    self.summary["fallback"][name] = layer.why
            elif isinstance(m, StepAffineConv2d):
                object.__setattr__(m, "_counter", self.step_input)  # its per-step correction rows: the input step too
        unet._forward_pre_hooks.clear()  # the step counter's hook: the step is an input here
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, step, text_embeds=None, time_ids=None):
        self.step_input.k = step
        added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added,
                         return_dict=False)[0]


def artifact_hash(quantized: str | Path) -> str:
    """sha256 over the artifact's files (config, quantization map, tensors): what the IR is a function of."""
    h = hashlib.sha256()
    for name in ARTIFACT_FILES:
        path = Path(quantized) / name
        if not path.is_file():
            raise StoreError(f"{quantized} is not a pcr quantized-model folder: {name} is missing")
        h.update(name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def default_ir_dir(digest: str) -> Path:
    """$PCR_CACHE (default $XDG_CACHE_HOME/pcr, ~/.cache/pcr) / openvino / v<FORMAT_VERSION> / the artifact's hash:
    an IR cached by a pcr of another export format is not found there (a new one is exported beside it)."""
    root = Path(os.environ.get("PCR_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pcr"))
    return root / "openvino" / f"v{FORMAT_VERSION}" / digest[:16]


def _example_inputs(config: dict, batch: int = 2) -> dict[str, Tensor]:
    size = config.get("sample_size") or 8
    size = size if isinstance(size, int) else size[0]
    size = min(size, 32)
    ex = {"sample": torch.randn(batch, config["in_channels"], size, size), "timestep": torch.tensor([1.0]),
          "encoder_hidden_states": torch.randn(batch, 8, config["cross_attention_dim"]),
          "step": torch.zeros(1, dtype=torch.long)}
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - N_TIME_IDS * config["addition_time_embed_dim"]
        ex["text_embeds"], ex["time_ids"] = torch.randn(batch, pooled), torch.zeros(batch, N_TIME_IDS)
    elif config.get("addition_embed_type") not in (None, "text"):  # "text": pooled from encoder_hidden_states
        raise StoreError(f"addition_embed_type={config['addition_embed_type']!r}: the OpenVINO export takes SD and SDXL UNets")
    return ex


@torch.no_grad()
def export_openvino(quantized: str | Path, out: str | Path | None = None) -> Path:
    """The artifact's UNet as OpenVINO IR (unet.xml/.bin + pcr_openvino.json) in `out`; returns the folder.

    out default: the cache folder of the artifact's hash and this export format (reused when it holds this artifact's
    IR); an `out` holding an IR of another format version is refused (export again, into a new folder).
    """
    ov = require_openvino()
    digest = artifact_hash(quantized)
    out = Path(out) if out is not None else default_ir_dir(digest)
    if (out / IR_META).is_file():
        check_ir(out, digest)
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"{out} exists and is not a pcr OpenVINO export: give a new or empty folder for the IR")
    unet = load_quantized(quantized)
    counter = step_counter(unet)
    config = dict(unet.config)
    wrapper = ExportUNet(unet).eval()
    ex = _example_inputs(config)
    dyn = {"sample": [-1, ex["sample"].shape[1], -1, -1], "timestep": [1],
           "encoder_hidden_states": [-1, -1, ex["encoder_hidden_states"].shape[2]], "step": [1],
           "text_embeds": [-1, ex.get("text_embeds", torch.zeros(0, 0)).shape[-1]], "time_ids": [-1, N_TIME_IDS]}
    with warnings.catch_warnings():  # the tracer's notes on diffusers' shape asserts: shapes are inputs of the IR
        warnings.simplefilter("ignore")
        model = ov.convert_model(wrapper, example_input=ex, input=[(n, ov.PartialShape(dyn[n])) for n in ex])
    for port, name in zip(model.inputs, ex, strict=True):
        port.get_tensor().set_names({name})
    model.outputs[0].get_tensor().set_names({"out_sample"})
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ov.save_model(model, tmp / IR_XML, compress_to_fp16=False)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "artifact_sha256": digest, "openvino": ov.__version__,
            "inputs": list(ex), "config": config, "summary": wrapper.summary,
            "timesteps": counter.timesteps.tolist(), "scheduler": counter.scheduler,
            "num_inference_steps": counter.num_inference_steps}
    (tmp / IR_META).write_text(json.dumps(meta, indent=1, default=list))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out


def read_meta(ir: str | Path) -> dict:
    path = Path(ir) / IR_META
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not a pcr OpenVINO export ({e}); export it with pcr.quant.kernels.openvino.export_openvino") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: format {meta.get('format')!r} version {meta.get('format_version')!r}, "
                         f"this pcr reads {FORMAT!r} version {FORMAT_VERSION}: export again")
    return meta


def check_ir(ir: str | Path, digest: str | None) -> dict:
    """The IR's metadata; refuses an IR of another artifact (digest given) or with missing files."""
    meta = read_meta(ir)
    if digest is not None and meta.get("artifact_sha256") != digest:
        raise StoreError(f"{ir} holds the OpenVINO export of another artifact (sha256 {str(meta.get('artifact_sha256'))[:16]}..., "
                         f"this one's is {digest[:16]}...): export this artifact into another folder")
    for name in (IR_XML, IR_BIN):
        if not (Path(ir) / name).is_file():
            raise StoreError(f"{ir}: {name} is missing: export again")
    return meta


class OpenVINOUNet(ModelMixin):
    """The OpenVINO UNet as `pipe.unet` (a diffusers ModelMixin, one empty parameter): counts steps like the torch
    UNet (`pcr_step`), same call signature, float32 on the CPU.

    The IR has dynamic shapes; it is compiled for the shapes of the call (static shapes run 20% faster on the
    SD 1.5 UNet), again only when they change (a pipeline keeps them for a whole generation).
    """

    def __init__(self, core, model, meta: dict, config: dict, where: Path):
        super().__init__()
        self.core, self.model, self.meta, self.ov_config, self.where = core, model, meta, config, where
        self.compiled = self.request = self.shapes = None
        # empty, float32 on the CPU: for code that reads a model's device and dtype from its first parameter
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.config = FrozenDict(meta["config"])
        self.inputs = meta["inputs"]
        setattr(self, STEP_COUNTER, StepCounter(meta["timesteps"], meta["scheduler"], meta["num_inference_steps"]))
        self.pcr_kernels = meta["summary"]
        if "text_embeds" in self.inputs:  # the SDXL pipeline checks its time ids against this layer's width
            width = self.config["projection_class_embeddings_input_dim"]
            self.add_embedding = SimpleNamespace(linear_1=SimpleNamespace(in_features=width))

    @classmethod
    def load(cls, ir: str | Path, threads: int | None = None, precision: str = "auto", digest: str | None = None) -> OpenVINOUNet:
        """The IR of folder `ir` (refused when it is not the export of the artifact with sha256 `digest`)."""
        ov = require_openvino()
        check_precision(precision)
        meta = check_ir(ir, digest)
        core = ov.Core()
        try:
            model = core.read_model(Path(ir) / IR_XML)
        except RuntimeError as e:
            raise StoreError(f"{Path(ir) / IR_XML}: damaged OpenVINO IR, cannot be read ({_first_line(e)}): "
                             "delete the folder and export again") from None
        names = [sorted(p.get_names()) for p in model.inputs]
        if sorted(n for ns in names for n in ns if n in meta["inputs"]) != sorted(meta["inputs"]):
            raise StoreError(f"{Path(ir) / IR_XML}: inputs {names} are not the exported {meta['inputs']}: export again")
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if PRECISIONS[precision]:
            config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        return cls(core, model, meta, config, Path(ir))

    def compile(self, feed: dict) -> None:
        """Compile for the shapes of `feed` (name -> array) unless the current model has them."""
        shapes = {n: tuple(v.shape) for n, v in feed.items()}
        if shapes == self.shapes:
            return
        self.model.reshape(shapes)
        try:
            self.compiled = self.core.compile_model(self.model, "CPU", self.ov_config)
        except RuntimeError as e:
            raise StoreError(f"{self.where / IR_BIN}: damaged OpenVINO IR, cannot be compiled ({_first_line(e)}): "
                             "delete the folder and export again") from None
        self.request, self.shapes = self.compiled.create_infer_request(), shapes

    @property
    def precision(self) -> str:
        """"f32" | "bf16": what the float parts run in on this CPU: the compiled model's precision, or before the first
        call the hint given (bf16 only where the CPU has it: else OpenVINO runs f32) or OpenVINO's default for the CPU."""
        if self.compiled is not None:
            return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        hint = self.ov_config.get("INFERENCE_PRECISION_HINT")
        if hint is None:
            return self.core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
        if hint == "bf16" and "BF16" not in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "f32"
        return hint

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def run(self, feed: dict):
        """One inference on numpy inputs (name -> array): the output array."""
        self.compile(feed)
        return self.request.infer(feed)[self.compiled.outputs[0]]

    def forward(self, sample, timestep, encoder_hidden_states=None, timestep_cond=None, cross_attention_kwargs=None,
                added_cond_kwargs=None, return_dict=True, **unused):
        t = torch.as_tensor(timestep).reshape(-1)
        if t.numel() > 1 and not bool((t == t[0]).all()):
            raise ValueError(f"one UNet call must run one sampling step, got timesteps {t.tolist()}")
        k = getattr(self, STEP_COUNTER).advance(float(t[0]))
        feed = {"sample": sample, "timestep": t[:1].float(), "encoder_hidden_states": encoder_hidden_states,
                "step": torch.tensor([k], dtype=torch.long)}
        if "text_embeds" in self.inputs:
            feed |= {"text_embeds": added_cond_kwargs["text_embeds"], "time_ids": added_cond_kwargs["time_ids"]}
        y = self.run({n: v.detach().cpu().float().contiguous().numpy() if v.is_floating_point() else v.cpu().numpy()
                      for n, v in feed.items()})
        y = torch.from_numpy(y.copy()).to(sample.dtype)
        if not return_dict:
            return (y,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=y)


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def load_openvino_unet(quantized: str | Path, ir: str | Path | None = None, threads: int | None = None,
                       precision: str = "auto") -> OpenVINOUNet:
    """Export the artifact (or reuse its cached / given IR) and load the compiled UNet."""
    check_precision(precision)  # before the export: a bad value costs nothing
    digest = artifact_hash(quantized)
    folder = export_openvino(quantized, ir)
    return OpenVINOUNet.load(folder, threads=threads, precision=precision, digest=digest)
