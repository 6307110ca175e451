"""Frozen, validated configuration built from params.yaml.

Every section of params.yaml is one frozen dataclass; `__post_init__` checks values, and
`from_dict` rejects unknown keys and wrong types with the key, the value and what is allowed.
Library code receives these objects, never raw dicts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml

from pcr.errors import ConfigError

MIN_BITS, MAX_BITS = 2, 16  # the bitwidths params allow (pcr.quant.bits reads them from here)

# The registries' names, known here without importing torch or diffusers (the relax stage then starts in
# a fraction of a second); tests/test_config.py checks them against pcr.quant.observers and pcr.models.schedulers.
OBSERVER_NAMES = ("minmax", "ema_minmax", "percentile", "mse", "auto")
SCHEDULER_NAMES = ("pndm", "ddim", "euler", "dpm++")
MIN_BOOTSTRAP = 100
WEIGHT_METHODS = ("rtn", "adaround")
QUANT_FORMATS = ("int", "fp8")  # pcr.quant.float8 re-exports them
FP8_ACT_BITS = 8  # fp8: activations are E4M3, 8 bits


def _check_bits(key: str, value: int) -> None:
    if not MIN_BITS <= value <= MAX_BITS:
        raise ConfigError(f"{key}={value!r} is not allowed: bits must be an integer from {MIN_BITS} to {MAX_BITS}")


def _choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {sorted(allowed)}")


def _positive(key: str, value: int | float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value!r} is not allowed: it must be positive")


@dataclass(frozen=True)
class ModelConfig:
    path: str = "data/demo/pipeline"
    scheduler: str = "ddim"  # pndm | ddim | euler | dpm++
    steps: int = 25  # T, sampling steps
    guidance_scale: float = 4.5
    height: int | None = None  # None: the model's native resolution
    width: int | None = None
    negative_prompt: str = ""
    dtype: str = "float32"  # float32 | float16 | bfloat16 (the last two on CUDA only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self):
        _choice("model.scheduler", self.scheduler, SCHEDULER_NAMES)
        _positive("model.steps", self.steps)
        if self.guidance_scale < 1.0:
            raise ConfigError(f"model.guidance_scale={self.guidance_scale!r} is not allowed: use 1.0 (no guidance) or more")
        _positive("model.height", self.height, allow_none=True)
        _positive("model.width", self.width, allow_none=True)
        _choice("model.dtype", self.dtype, {"float32", "float16", "bfloat16"})
        if not (self.device in {"auto", "cpu", "cuda"} or self.device.startswith("cuda:")):
            raise ConfigError(f"model.device={self.device!r} is not allowed: use auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class CollectConfig:
    prompts: str = "data/prompts/calibration.txt"
    num_prompts: int = 32
    seed: int = 0  # calibration sample i starts from noise seeded with seed + i
    batch_size: int = 16

    def __post_init__(self):
        _positive("collect.num_prompts", self.num_prompts)
        _positive("collect.batch_size", self.batch_size)


@dataclass(frozen=True)
class ReconConfig:
    """AdaRound weight reconstruction (BRECQ-style); defaults are the official PCR code's (tsa18/PCR, --recon)."""

    granularity: str = "block"  # block: each ResnetBlock2D / BasicTransformerBlock jointly, other layers alone | layer
    iterations: int = 2000  # Adam steps per block or layer
    batch_size: int = 32  # block-input rows per step (one row: one CFG branch of one sample at one step)
    lr: float = 1e-3  # Adam on V; the official code leaves Adam's default
    reg_weight: float = 0.01  # lambda of the rounding regulariser, blocks (official block_reconstruction)
    layer_reg_weight: float = 0.001  # lambda for layers reconstructed alone (official layer_reconstruction)
    b_start: float = 20.0  # annealing of the regulariser's exponent b
    b_end: float = 2.0
    warmup: float = 0.0  # share of iterations at b_start without regulariser; the official code passes none (0.0)
    num_samples: int = 10  # calibration samples whose stored trajectories feed the blocks (official: 10 prompts)
    num_steps: int | None = None  # sampling steps drawn evenly from each trajectory; None: every step (official)
    seed: int = 0  # mini-batch draws of unit i use seed + i

    def __post_init__(self):
        _choice("quant.recon.granularity", self.granularity, {"block", "layer"})
        for key in ("iterations", "batch_size", "lr", "num_samples"):
            _positive(f"quant.recon.{key}", getattr(self, key))
        _positive("quant.recon.num_steps", self.num_steps, allow_none=True)
        for key in ("reg_weight", "layer_reg_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"quant.recon.{key}={getattr(self, key)!r} is not allowed: use 0 or more")
        if not self.b_start >= self.b_end > 0:
            raise ConfigError(f"quant.recon.b_start={self.b_start!r}, b_end={self.b_end!r} are not allowed: need b_start >= b_end > 0")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"quant.recon.warmup={self.warmup!r} is not allowed: use a number in [0, 1)")


@dataclass(frozen=True)
class QuantConfig:
    weight_bits: int = 8
    act_bits: int = 8
    weight_observer: str = "mse"
    act_observer: str = "auto"  # mse below 8 bits, minmax from 8 (pcr.quant.observers.auto)
    weight_symmetric: bool = False
    act_symmetric: bool = False
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = ("conv_in", "conv_out")
    ema_constant: float = 0.01  # c of ema_minmax: ema <- ema + c * (batch value - ema), torch's default
    weight_method: str = "rtn"  # rtn (round to nearest) | adaround (learned rounding, quant.recon)
    recon: ReconConfig = field(default_factory=ReconConfig)
    format: str = "int"  # int: affine integer codes | fp8: E4M3 activations (per step) and 8-bit weights (per channel)

    def __post_init__(self):
        _check_bits("quant.weight_bits", self.weight_bits)
        _check_bits("quant.act_bits", self.act_bits)
        _choice("quant.format", self.format, QUANT_FORMATS)
        if self.format == "fp8" and self.act_bits != FP8_ACT_BITS:
            raise ConfigError(f"quant.act_bits={self.act_bits!r} is not allowed with quant.format=fp8: FP8 (E4M3) "
                              f"activations are {FP8_ACT_BITS} bits (relaxed steps run unquantized)")
        if self.format == "fp8" and self.weight_bits == 8 and self.weight_method == "adaround":
            raise ConfigError("quant.weight_method='adaround' is not allowed with quant.format=fp8 and weight_bits=8: "
                              "AdaRound learns integer rounding, the 8-bit fp8 weights are E4M3 (use rtn)")
        _choice("quant.weight_observer", self.weight_observer, OBSERVER_NAMES)
        _choice("quant.act_observer", self.act_observer, OBSERVER_NAMES)
        if not 0.0 < self.ema_constant <= 1.0:
            raise ConfigError(f"quant.ema_constant={self.ema_constant!r} is not allowed: use a number in (0, 1]")
        _choice("quant.weight_method", self.weight_method, WEIGHT_METHODS)
        if not self.include:
            raise ConfigError("quant.include=[] is not allowed: give at least one fnmatch pattern, e.g. ['*']")


@dataclass(frozen=True)
class StoreConfig:
    layers: tuple[str, ...] = ("down_blocks.0.resnets.0.conv1", "mid_block.attentions.0.proj_in", "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    samples: int = 2  # calibration samples whose activations are stored

    def __post_init__(self):
        if self.samples < 0:
            raise ConfigError(f"calibrate.store.samples={self.samples!r} is not allowed: use 0 or more")


@dataclass(frozen=True)
class CalibrateConfig:
    mode: str = "progressive"  # progressive | fp32 | shared
    objective: str = "affine"  # ranges | bias | affine: what each step fits after its ranges (pcr.calibrate.objectives)
    batch_size: int = 16
    store: StoreConfig = field(default_factory=StoreConfig)

    def __post_init__(self):
        _choice("calibrate.mode", self.mode, {"progressive", "fp32", "shared"})
        _choice("calibrate.objective", self.objective, ("ranges", "bias", "affine"))
        _positive("calibrate.batch_size", self.batch_size)


@dataclass(frozen=True)
class RelaxConfig:
    fraction: float = 0.0  # share of sampling steps whose activations run at `bits`
    where: str = "x0"  # x0: the last steps (fidelity) | xT: the first steps | auto: the most sensitive steps (pcr.sensitivity)
    bits: int = 10
    sensitivity_samples: int = 8  # calibration samples the sensitivity stage rolls out from every step (auto)
    recalibrate: bool = False  # calibrate the relaxed steps at `bits` inside the sweep (the official loop; x0/xT)

    def __post_init__(self):
        _positive("relax.sensitivity_samples", self.sensitivity_samples)
        if self.recalibrate and self.where == "auto":
            raise ConfigError("relax.recalibrate=true needs relax.where x0 or xT: auto chooses its steps from the "
                              "calibrated model, so they cannot be known while calibrating")
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"relax.fraction={self.fraction!r} is not allowed: use a number in [0, 1]")
        _choice("relax.where", self.where, ("x0", "xT", "auto"))
        _check_bits("relax.bits", self.bits)


@dataclass(frozen=True)
class EvalConfig:
    prompts: str = "data/prompts/eval.txt"
    paraphrase_prompts: str | None = "data/prompts/eval_paraphrase.txt"  # the prompt-generalisation set
    num_prompts: int = 64  # per set
    images_per_prompt: int = 1  # seeds per prompt: N = num_prompts * images_per_prompt images per set
    seed: int = 1000  # evaluation sample i starts from noise seeded with seed + i
    batch_size: int = 16

    def __post_init__(self):
        _positive("eval.num_prompts", self.num_prompts)
        _positive("eval.images_per_prompt", self.images_per_prompt)
        _positive("eval.batch_size", self.batch_size)


@dataclass(frozen=True)
class GenerateConfig:
    grid_images: int = 8  # FP32 / quantized pairs shown in grid.png
    kernels: str = "fake"  # fake (reference) | int (integer kernels) | fp8 (E4M3 kernels): pcr.quant.kernels.use_kernels | openvino (CPU)
    openvino_precision: str = "auto"  # kernels openvino: the float parts at OpenVINO's default (bf16 on AVX512-BF16 / AMX CPUs) | f32 | bf16

    def __post_init__(self):
        _positive("generate.grid_images", self.grid_images)
        _choice("generate.kernels", self.kernels, ("fake", "int", "fp8", "openvino"))
        _choice("generate.openvino_precision", self.openvino_precision, ("auto", "f32", "bf16"))


@dataclass(frozen=True)
class ScoreConfig:
    feature: str = "clip"  # feature network of FID/KID: clip | inception
    feature_path: str | None = "data/demo/clip"
    clip_path: str | None = "data/demo/clip"  # CLIP model for CLIP score; None: skip
    real: str | None = "render"  # render (the demo's ground truth) | a folder of images | None
    judge: str | None = "data/demo/judge"  # the demo's attribute classifier (text-image matching); None: skip
    kid_subset_size: int = 50
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where the feature and CLIP models run
    batch_size: int = 64  # images per batch read from the stores and fed to the models
    bootstrap: int = 1000  # paired bootstrap replicates of every figure's 95% interval; 0: no intervals
    seed: int = 0  # the bootstrap's generator seed

    def __post_init__(self):
        _positive("score.kid_subset_size", self.kid_subset_size)
        _positive("score.batch_size", self.batch_size)
        if not (self.device in {"auto", "cpu", "cuda"} or self.device.startswith("cuda:")):
            raise ConfigError(f"score.device={self.device!r} is not allowed: use auto, cpu, cuda or cuda:N")
        if self.bootstrap != 0 and self.bootstrap < MIN_BOOTSTRAP:
            raise ConfigError(f"score.bootstrap={self.bootstrap!r} is not allowed: use 0 (no intervals) or at least "
                              f"{MIN_BOOTSTRAP} replicates (fewer give unstable 95% bounds)")


@dataclass(frozen=True)
class RunConfig:
    launcher: str = ""  # prefix of collect/reference/generate in dvc.yaml, e.g. "accelerate launch --no_python --num_processes 8"


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "collect": CollectConfig, "quant": QuantConfig, "calibrate": CalibrateConfig,
    "relax": RelaxConfig, "eval": EvalConfig, "generate": GenerateConfig, "score": ScoreConfig, "run": RunConfig,
}


# Keys that were removed, with what to use instead (a plain "unknown key" would not say).
REMOVED = {
    "calibrate.num_prompts": "every mode calibrates on every collected prompt, so that fp32, shared and progressive "
                             "see the same ones: set collect.num_prompts instead",
}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(key: str, value: Any, tp) -> Any:
    """Check `value` against the annotation `tp`; lists become tuples, ints are accepted as floats."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r} is not allowed: expected a list of {_type_name(args[0])}")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin is Literal:
        _choice(key, value, set(args))
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} is not allowed: expected {_type_name(tp)}, got {type(value).__name__}")
    return value


def from_dict(cls: type, data: Any, section: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{section} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    for key in (f"{section}.{k}" for k in unknown):
        if key in REMOVED:
            raise ConfigError(f"{key} is no longer a key: {REMOVED[key]}")
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]} is not a known key: allowed keys of {section} are {names}")
    return cls(**{k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in data.items()})


OUTPUT_LAYER = "conv_out"  # pcr.quant.correction.OUTPUT_LAYER (config imports no torch)


@dataclass(frozen=True)
class Params:
    model: ModelConfig = field(default_factory=ModelConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    relax: RelaxConfig = field(default_factory=RelaxConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def check_combinations(self) -> None:
        """Checks across sections, run by the env stage (which reads every key) so a bad combination fails before
        any stage: not in __post_init__, where every stage would read these keys and DVC would have to list them."""
        q = self.quant
        quantized_output = (any(fnmatchcase(OUTPUT_LAYER, p) for p in q.include)
                            and not any(fnmatchcase(OUTPUT_LAYER, p) for p in (*q.exclude, *q.keep_float)))
        if self.calibrate.objective != "ranges" and quantized_output:
            raise ConfigError(f"calibrate.objective={self.calibrate.objective!r} corrects the UNet's output in its float "
                              f"{OUTPUT_LAYER}, which quant.* quantizes: add {OUTPUT_LAYER} to quant.keep_float or set "
                              "calibrate.objective: ranges")

    @classmethod
    def from_dict(cls, data: dict) -> Params:
        if not isinstance(data, dict):
            raise ConfigError(f"params must be a mapping of sections, got {type(data).__name__}")
        extra = sorted(set(data) - set(SECTIONS))
        if extra:
            raise ConfigError(f"params section {extra[0]!r} is unknown: sections are {sorted(SECTIONS)}")
        return cls(**{name: from_dict(c, data.get(name), name) for name, c in SECTIONS.items()})


def load_params(path: str | Path = "params.yaml") -> Params:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file {str(p)!r} does not exist")
    return Params.from_dict(yaml.safe_load(p.read_text()) or {})


def read_prompts(path: str | Path, limit: int | None = None, key: str = "prompts") -> list[str]:
    """Non-empty, stripped lines of a UTF-8 prompts file; the first `limit` of them."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}={str(p)!r}: the prompts file does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{key}={str(p)!r}: the prompts file is not UTF-8 text (byte offset {e.start}: "
                          f"{e.object[e.start:e.start + 1]!r}); save it as UTF-8, one prompt per line") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{key}={str(p)!r}: the prompts file is empty")
    return lines[:limit] if limit else lines


def calibration_prompts(params: Params) -> list[str]:
    """The first collect.num_prompts prompts of collect.prompts."""
    return read_prompts(params.collect.prompts, params.collect.num_prompts, key="collect.prompts")


def eval_prompt_sets(params: Params) -> dict[str, list[str]]:
    """Evaluation prompt sets: `standard` (eval.prompts) and, unless eval.paraphrase_prompts is null, `paraphrase`;
    the first eval.num_prompts of each, each repeated eval.images_per_prompt times in a row (sample i: prompt
    i // images_per_prompt, seed eval.seed + i)."""
    e = params.eval
    files = {"standard": (e.prompts, "eval.prompts"), "paraphrase": (e.paraphrase_prompts, "eval.paraphrase_prompts")}
    return {name: [p for p in read_prompts(path, e.num_prompts, key=key) for _ in range(e.images_per_prompt)]
            for name, (path, key) in files.items() if path is not None}
