"""The `weights` stage: quantized weights of every chosen layer -> weights.safetensors (+ a per-unit loss CSV).

The UNet runs in float32 whatever model.dtype (the official code reconstructs in float32 too).
rtn: round to nearest, no data. adaround: AdaRound per reconstruction unit (reconstruct.py) on block inputs
captured by running the float UNet on collect's stored trajectories (`quant.recon.num_samples` samples at
`quant.recon.num_steps` steps): no extra generation.

Resumable per unit: each finished unit's codes go to `<out>.partial/<index>.safetensors` (with its losses in
the metadata) under a fingerprint of the settings; a rerun skips the finished units, and the last step merges
them into `out` and removes the partial directory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pcr.config import Params
from pcr.errors import StoreError
from pcr.models.conditioning import select
from pcr.quant.quantize import select_layers
from pcr.sampling import load_sampler
from pcr.stores import open_store, partial_path
from pcr.weights.codes import load_weights, read_metadata, save_weights
from pcr.weights.reconstruct import capture, reconstruct_unit, units
from pcr.weights.rtn import rtn

CSV_FIELDS = ("index", "unit", "kind", "layers", "rows", "seconds", "mse_rtn", "mse_adaround")
CAPTURE_SAMPLES = 8  # samples per UNet call while capturing (16 rows with CFG)


def settings(params: Params) -> dict:
    """The params the weights depend on (exactly the keys dvc.yaml lists for the stage)."""
    q = params.quant
    out = {k: getattr(q, k) for k in ("format", "weight_bits", "weight_symmetric", "weight_observer", "weight_method", "include",
                                      "exclude", "keep_float")}
    if q.weight_method == "adaround":
        out["recon"] = asdict(q.recon)
    return json.loads(json.dumps(out))


def step_indices(T: int, num_steps: int | None) -> list[int]:
    """num_steps sampling steps spread evenly over 0 .. T-1 (all of them for None)."""
    if num_steps is None or num_steps >= T:
        return list(range(T))
    return sorted(set(np.linspace(0, T - 1, num_steps).round().astype(int).tolist()))


def weights(params: Params, trajectories: str | Path, out: str | Path, losses: str | Path, progress: bool = True) -> None:
    q = params.quant
    pipe, sampler = load_sampler(replace(params.model, dtype="float32"))  # AdaRound learns in float32, as the official code
    unet = pipe.unet.requires_grad_(False)
    names = select_layers(unet, q.include, q.exclude, q.keep_float)
    meta = settings(params)
    Path(losses).parent.mkdir(parents=True, exist_ok=True)
    if q.weight_method == "rtn":
        codes = {n: rtn(unet.get_submodule(n).weight, q.weight_bits, q.weight_symmetric, q.weight_observer, q.format) for n in names}
        save_weights(out, codes, "rtn", meta)
        _write_csv(losses, [])
        return

    store = open_store(trajectories, "trajectories")
    if not np.array_equal(store["timesteps"][:], sampler.timesteps.cpu().numpy()):
        raise StoreError(f"{trajectories}: its timesteps differ from model.scheduler/model.steps' (rerun collect)")
    n = min(q.recon.num_samples, store["x"].shape[1])
    steps = step_indices(sampler.num_steps, q.recon.num_steps)
    x = {k: torch.from_numpy(store["x"][k, :n]) for k in steps}  # x_t of step k [n, C, h, w]
    cond = {name.split("/")[-1]: torch.from_numpy(store[name][:n]) for name in _cond_arrays(store)}
    chunks = [slice(i, min(i + CAPTURE_SAMPLES, n)) for i in range(0, n, CAPTURE_SAMPLES)]
    calls = [(lambda k=k, c=c: sampler.eps(x[k][c], k, select(cond, c), sampler.new_scheduler())) for k in steps for c in chunks]

    plan = units(unet, names, q.recon.granularity)
    partial = _open_partial(out, {"settings": meta, "model": asdict(params.model), "trajectories": store.attrs.get("fingerprint"),
                                  "layers": names})
    todo = [i for i in range(len(plan)) if not (partial / f"{i:04d}.safetensors").exists()]
    bar = tqdm(total=len(todo) * q.recon.iterations, desc="weights (adaround)", disable=not progress, unit="it")
    for i in todo:
        unit = plan[i]
        bar.set_postfix_str(unit.module)
        t0 = time.perf_counter()
        data = capture(unet, unet.get_submodule(unit.module), calls)
        result = reconstruct_unit(unet, unit, data, q, torch.Generator().manual_seed(q.recon.seed + i), lambda _: bar.update())
        row = {"index": i, "unit": unit.module, "kind": unit.kind, "layers": len(unit.layers), "rows": data.num_rows,
               "seconds": round(time.perf_counter() - t0, 3), "mse_rtn": result.mse_rtn, "mse_adaround": result.mse_adaround}
        tmp = partial / f"{i:04d}.tmp"
        save_weights(tmp, result.codes, "adaround", {"row": row})
        tmp.rename(partial / f"{i:04d}.safetensors")  # a unit is finished once its file has its final name
        del data
    bar.close()

    codes, rows = {}, []
    for i in range(len(plan)):
        f = partial / f"{i:04d}.safetensors"
        codes.update(load_weights(f))
        rows.append(read_metadata(f)["settings"]["row"])
    save_weights(out, {n: codes[n] for n in names}, "adaround", meta)
    _write_csv(losses, rows)
    shutil.rmtree(partial)


def _cond_arrays(store) -> list[str]:
    return [f"cond/{name}" for name, _ in sorted(store["cond"].arrays())]


def _open_partial(out: str | Path, fingerprint: dict) -> Path:
    """`<out>.partial/`, kept if an interrupted run with the same fingerprint left it, else fresh."""
    partial = partial_path(out)
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    stamp = partial / "fingerprint.txt"
    if partial.exists() and not (stamp.is_file() and stamp.read_text() == digest):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    return partial


def _write_csv(path: str | Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
