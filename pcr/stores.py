"""The Zarr (v3) layouts of every stage's store: the one place that knows array names and attrs.

Every array carries `dimension_names`, one name for one length across a store (so that
`xarray.open_datatree(path, engine="zarr")` opens every store); every store's root attrs carry `kind`,
`format_version` and `complete`. A store is written under `<path>.partial` and renamed into place when
complete, so a reader never sees a half-written store at the declared path; `open_store` refuses a store
whose attrs do not say complete.

    trajectories.zarr  (collect)    x [state: T+1, sample: N, C, h, w] f32 (x_T first),
                                    model_output [step: T, N, C, h, w] f32 (guided eps, or v for v-prediction),
                                    timesteps [T], cond/<name> [N, branch: 2, ...], stats/<stat> [T, layer: L(, bin: B)]
    calib.zarr         (calibrate)  x, model_output (the quantized trajectory), stats/<stat> [T, L(, B)],
                                    activations/<layer> [T, capture: S, ...] integer codes (attrs: scale, zero point, bits)
    reference.zarr / generated.zarr images/<set> [<set>_sample: N, H, W, rgb: 3] uint8 (+ done/<set> [N] bool)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from pcr.errors import StoreError

FORMAT_VERSION = 2  # 2: model_output (was eps), x along `state`, dimension names unique per length
LATENT_DIMS = ("sample", "channel", "height", "width")
STAT_NAMES = ("min", "max", "ema_min", "ema_max")
PARTIAL_SUFFIX = ".partial"


def codec(dtype) -> list[BloscCodec]:
    """Blosc zstd with bit-shuffle (byte-shuffle for 1-byte types, where bits would gain nothing)."""
    shuffle = BloscShuffle.shuffle if np.dtype(dtype).itemsize == 1 else BloscShuffle.bitshuffle
    return [BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)]


def partial_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + PARTIAL_SUFFIX)


def create_store(path: str | Path, kind: str, **attrs) -> zarr.Group:
    """A fresh store of `kind` at `<path>.partial` (any older partial store there is removed)."""
    tmp = partial_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(str(tmp), mode="w")
    group.attrs.update({"kind": kind, "format_version": FORMAT_VERSION, "complete": False, **attrs})
    return group


def fingerprint(*parts, files: Sequence[str | Path] = ()) -> str:
    """What a resumed partial store must share with the run resuming it: JSON-able `parts` and file contents."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def resume_store(path: str | Path, kind: str, fingerprint: str) -> zarr.Group | None:
    """The partial store left at `<path>.partial` by an interrupted run with the same fingerprint."""
    tmp = partial_path(path)
    if not tmp.exists():
        return None
    try:
        group = zarr.open_group(str(tmp), mode="r+")
    except Exception:
        return None
    a = group.attrs
    if a.get("kind") != kind or a.get("format_version") != FORMAT_VERSION or a.get("fingerprint") != fingerprint:
        return None
    return group


def open_partial(path: str | Path) -> zarr.Group:
    """The partial store `<path>.partial` another process (the main one) created, for writing its region."""
    tmp = partial_path(path)
    if not tmp.exists():
        raise StoreError(f"store {str(tmp)!r} does not exist: the main process creates it before the others write")
    return zarr.open_group(str(tmp), mode="r+")


def finish_store(group: zarr.Group, path: str | Path) -> None:
    """Mark complete, consolidate the metadata (a reader, xarray included, opens the store with one read), and
    move `<path>.partial` to `path` (replacing what was there)."""
    group.attrs["complete"] = True
    tmp, final = partial_path(path), Path(path)
    with warnings.catch_warnings():  # zarr notes that consolidated metadata is not (yet) in the v3 spec
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def add_array(group: zarr.Group, name: str, shape: Sequence[int], dtype, dims: Sequence[str],
              chunks: Sequence[int], shards: Sequence[int] | None = None, **attrs) -> zarr.Array:
    if len(dims) != len(shape):
        raise ValueError(f"array {name!r}: {len(dims)} dimension names for a {len(shape)}-d shape")
    if shards:  # a shard holds whole chunks
        shards = tuple(-(-s // c) * c for s, c in zip(shards, chunks, strict=True))
    return group.create_array(name, shape=tuple(shape), dtype=dtype, chunks=tuple(chunks), shards=shards or None,
                              compressors=codec(dtype), dimension_names=tuple(dims), attributes=attrs, fill_value=0)


def open_store(path: str | Path, kind: str) -> zarr.Group:
    """A complete store of `kind`, read-only; StoreError naming what is wrong otherwise."""
    p = Path(path)
    if not p.exists():
        hint = f" (an interrupted run left {partial_path(p)}; rerun the stage to finish it)" if partial_path(p).exists() else ""
        raise StoreError(f"store {str(p)!r} does not exist{hint}")
    try:
        group = zarr.open_group(str(p), mode="r")
    except Exception as e:
        raise StoreError(f"{str(p)!r} is not a Zarr store: {e}") from None
    a = group.attrs
    if a.get("kind") != kind:
        raise StoreError(f"store {str(p)!r} is a {a.get('kind')!r} store, expected {kind!r}")
    if a.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"store {str(p)!r} has format_version={a.get('format_version')!r}; this pcr reads {FORMAT_VERSION}")
    if a.get("complete") is not True:
        raise StoreError(f"store {str(p)!r} is incomplete (its attrs do not say complete); rerun the stage that writes it")
    return group


def describe(path: str | Path) -> str:
    """A tree of the store: arrays with shape, dtype, dims, chunks and bytes stored; attrs (short)."""
    group = zarr.open_group(str(path), mode="r")
    lines = [f"{path}  attrs: {_short(dict(group.attrs))}"]
    total = 0

    def walk(g: zarr.Group, indent: str) -> None:
        nonlocal total
        for name, member in sorted(g.members()):
            if isinstance(member, zarr.Group):
                lines.append(f"{indent}{name}/")
                walk(member, indent + "  ")
            else:
                stored = member.nbytes_stored()
                total += stored
                ratio = member.nbytes / stored if stored else float("inf")
                lines.append(f"{indent}{name}  {member.shape} {member.dtype}  dims={member.metadata.dimension_names} "
                             f"chunks={member.chunks}  stored={stored / 1e6:.3f} MB (x{ratio:.1f})"
                             + (f"  attrs: {_short(dict(member.attrs))}" if member.attrs else ""))

    walk(group, "  ")
    lines.append(f"total stored: {total / 1e6:.3f} MB")
    return "\n".join(lines)


def _short(d: dict, limit: int = 160) -> str:
    s = ", ".join(f"{k}={v!r}" for k, v in d.items())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --- layouts: the builders every stage calls -------------------------------------------------------------


def add_trajectory_arrays(store: zarr.Group, timesteps: np.ndarray, n: int, latent_shape: Sequence[int], batch: int,
                          shard_samples: bool = True) -> None:
    """x [T+1 states, N, C, h, w], model_output [T steps, N, C, h, w], timesteps [T]: chunks of (1, batch samples).

    shard_samples=True: one shard per step. False (arrays several processes write, batch by batch): no shards,
    one file per chunk, so no two processes ever write one file.
    """
    T = len(timesteps)
    for name, length, first in (("x", T + 1, "state"), ("model_output", T, "step")):
        chunks = (1, min(batch, n), *latent_shape)
        add_array(store, name, (length, n, *latent_shape), "float32", (first, *LATENT_DIMS), chunks,
                  (1, n, *latent_shape) if shard_samples else None)
    store.create_array("timesteps", data=np.asarray(timesteps, dtype="int64"), dimension_names=("step",))


def add_cond_arrays(store: zarr.Group, cond: dict[str, np.ndarray]) -> None:
    """cond/<name> [N, 2 (CFG branch: uncond, cond), ...], written whole; trailing dims are named after the array."""
    for name, v in cond.items():
        dims = ("sample", "branch") + tuple(f"{name}_{i}" for i in range(v.ndim - 2))
        add_array(store, f"cond/{name}", v.shape, "float32", dims, v.shape)[:] = v


def add_stats_arrays(store: zarr.Group, T: int, layers: list[str], hist_bins: int | None) -> None:
    """stats/<min|max|ema_min|ema_max> [T, L] and, with hist_bins, stats/hist [T, L, bins]; one chunk per step."""
    L = len(layers)
    for stat in STAT_NAMES:
        add_array(store, f"stats/{stat}", (T, L), "float32", ("step", "layer"), (1, L), layers=layers)
    if hist_bins:
        add_array(store, "stats/hist", (T, L, hist_bins), "float32", ("step", "layer", "bin"), (1, L, hist_bins),
                  (T, L, hist_bins), layers=layers)


def add_correction_arrays(store: zarr.Group, T: int, channels: int) -> None:
    """correction/<gain|shift> [T, C]: each step's output correction (pcr.calibrate.objectives), one chunk."""
    for name, fill in (("gain", 1.0), ("shift", 0.0)):
        add_array(store, f"correction/{name}", (T, channels), "float32", ("step", "channel"), (T, channels))
        store[f"correction/{name}"][:] = fill


def write_stats(store: zarr.Group, k: int, arrays: dict[str, np.ndarray]) -> None:
    """Step k's statistics (as `pcr.stats.record.stack_stats` lays them out); those the store keeps."""
    for stat, v in arrays.items():
        if f"stats/{stat}" in store:
            store[f"stats/{stat}"][k] = v


def read_stats(store: zarr.Group, k: int | slice = slice(None)) -> dict[str, np.ndarray]:
    """Every stats/<stat> array at step(s) k."""
    return {s: store[f"stats/{s}"][k] for s in store["stats"].array_keys()}


def add_image_arrays(store: zarr.Group, sets: dict[str, int], size: tuple[int, int], batch: int) -> None:
    """images/<set> [N, H, W, 3] uint8 and done/<set> [N] bool per prompt set, one chunk per batch.
    Sets may hold different counts, so each has its own sample dimension, `<set>_sample`."""
    h, w = size
    for name, n in sets.items():
        b = min(batch, n)
        add_array(store, f"images/{name}", (n, h, w, 3), "uint8", (f"{name}_sample", "height", "width", "rgb"), (b, h, w, 3))
        add_array(store, f"done/{name}", (n,), "bool", (f"{name}_sample",), (b,))


def write_activation_codes(store: zarr.Group, layer: str, k: int, codes: np.ndarray, T: int, scale: float,
                           zero_point: int, bits: int, symmetric: bool) -> None:
    """activations/<layer> [T, S, ...]: step k's integer codes of the layer's first S inputs, with the step's
    scale / zero point / bits in the attrs. The layer's own dims are named after it (layers differ in shape)."""
    path = f"activations/{layer}"
    if path not in store:
        trailing = {2: ("channel",), 3: ("token", "channel"), 4: ("channel", "height", "width")}[codes.ndim]
        dims = ("step", "capture", *(f"{layer}.{d}" for d in trailing))
        add_array(store, path, (T, *codes.shape), codes.dtype, dims, (1, *codes.shape), (T, *codes.shape),
                  layer=layer, scale=[None] * T, zero_point=[None] * T, bits=[None] * T, symmetric=symmetric)
    arr = store[path]
    arr[k] = codes
    attrs = dict(arr.attrs)
    for key, v in (("scale", float(scale)), ("zero_point", int(zero_point)), ("bits", int(bits))):
        attrs[key][k] = v
    arr.attrs.update(attrs)
