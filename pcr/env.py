"""env: the pipeline's first stage, for what DVC cannot see by itself. It runs on every `dvc repro` (it
is `always_changed`, and takes well under a second); a stage downstream reruns only when a file it depends on
comes out different, so:

- versions_<group>.json: the versions of the libraries that can change a stage's numbers. An upgrade of
  torch reruns the model stages; one of torchmetrics only score.
- prompts_calibration.json / prompts_eval.json: the prompt lists the stages use (the first num_prompts
  lines of each file; eval.paraphrase_prompts: null leaves that set out). Stages depend on these snapshots,
  not on the files named in params, so a path may be null, and a rename with the same lines reruns nothing.
- relax_calibration.json: what of relax calibrate must follow: the schedule only with relax.recalibrate, and
  min_bits = min(relax.bits, quant.act_bits), the fewest bits its statistics serve (they hold histograms
  only where the observer reads them from there up); so calibrate reruns on a relax change only when it
  recalibrates the relaxed steps or the statistics must serve fewer bits.
- params.yaml is validated first: a bad value fails here, before DVC has removed any other stage's outputs.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pcr.config import calibration_prompts, eval_prompt_sets, load_params
from pcr.files import atomic_path

LIBRARIES = {  # group -> the distributions whose version can change the numbers of the stages that read it
    "sampling": ("torch", "diffusers", "transformers", "numpy"),  # collect, reference, calibrate, generate
    "scoring": ("torch", "transformers", "torchmetrics", "numpy", "pillow"),  # score
}


def versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed version of each distribution ("absent" when not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def relax_calibration(params) -> dict:
    """The relax settings calibrate follows: min_bits, the fewest activation bits its statistics serve (it records
    histograms only where the observer reads them from there up), and the schedule only with relax.recalibrate."""
    r = params.relax
    spec = {"recalibrate": True, "fraction": r.fraction, "where": r.where, "bits": r.bits} if r.recalibrate else {"recalibrate": False}
    return spec | {"min_bits": min(r.bits, params.quant.act_bits)}


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def env(params_path: str | Path, out_dir: str | Path) -> None:
    """Validate params, then write versions_<group>.json, prompts_calibration.json, prompts_eval.json and
    relax_calibration.json."""
    params = load_params(params_path)
    params.check_combinations()
    calibration, sets = calibration_prompts(params), eval_prompt_sets(params)  # read (and checked) before writing
    out = Path(out_dir)
    for group, names in LIBRARIES.items():
        _write_json(out / f"versions_{group}.json", versions(names))
    _write_json(out / "prompts_calibration.json", calibration)
    _write_json(out / "prompts_eval.json", sets)
    _write_json(out / "relax_calibration.json", relax_calibration(params))

