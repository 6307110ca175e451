"""The Zarr (v3) layouts of every stage's store: the one place that knows array names and attrs.

Every array carries `dimension_names`; every store's root attrs carry `kind`, `format_version`
and `complete`. A store is written under `<path>.partial` and renamed into place when complete,
so a reader never sees a half-written store at the declared path; `open_store` refuses a store
whose attrs do not say complete.

    trajectories.zarr  (collect)    x [T+1, N, C, h, w] f32, eps [T, N, C, h, w] f32, timesteps [T],
                                    cond/<name> [N, 2, ...], stats/<stat> [T, L(, B)]
    calib.zarr         (calibrate)  x, eps (the quantized trajectory), stats/<stat> [T, L(, B)],
                                    activations/<layer> [T, S, ...] integer codes (+ scale, zero point)
    reference.zarr / generated.zarr images/<set> [N, H, W, 3] uint8 (+ done/<set> [N] bool)
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from pcr.errors import StoreError

FORMAT_VERSION = 1
TRAJECTORY_DIMS = ("step", "sample", "channel", "height", "width")
IMAGE_DIMS = ("sample", "height", "width", "rgb")
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
    """Mark complete and move `<path>.partial` to `path` (replacing what was there)."""
    group.attrs["complete"] = True
    tmp, final = partial_path(path), Path(path)
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
