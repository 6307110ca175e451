import numpy as np
import pytest
import zarr

from pcr.stores import (
    FORMAT_VERSION,
    StoreError,
    add_array,
    create_store,
    describe,
    finish_store,
    open_store,
    partial_path,
)


def test_store_is_written_aside_and_only_complete_stores_open(tmp_path):
    out = tmp_path / "s.zarr"
    g = create_store(out, "demo", note="x")
    a = add_array(g, "images", (5, 4, 4, 3), "uint8", ("sample", "height", "width", "rgb"), (2, 4, 4, 3))
    data = np.arange(5 * 48, dtype=np.uint8).reshape(5, 4, 4, 3)
    a[:] = data
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(StoreError, match="does not exist .*interrupted run"):
        open_store(out, "demo")
    finish_store(g, out)
    s = open_store(out, "demo")
    assert s["images"].metadata.dimension_names == ("sample", "height", "width", "rgb")
    np.testing.assert_array_equal(s["images"][:], data)
    with pytest.raises(StoreError, match="is a 'demo' store, expected 'other'"):
        open_store(out, "other")
    assert "images  (5, 4, 4, 3) uint8" in describe(out)


def test_incomplete_store_is_refused(tmp_path):
    g = zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    g.attrs.update(kind="demo", format_version=FORMAT_VERSION, complete=False)
    with pytest.raises(StoreError, match="is incomplete"):
        open_store(tmp_path / "x.zarr", "demo")


def test_shards_hold_whole_chunks(tmp_path):
    g = create_store(tmp_path / "s.zarr", "demo")
    a = add_array(g, "x", (3, 10, 2), "float32", ("step", "sample", "c"), (1, 4, 2), (1, 10, 2))
    a[:] = 1.5
    assert float(a[:].sum()) == 1.5 * 60
