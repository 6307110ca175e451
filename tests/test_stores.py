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


def test_xarray_opens_every_store_kind(tmp_path, tiny_sd_dir, small_params):
    """xarray's datatree needs one length per dimension name across a store: x has T+1 states, model_output T steps,
    layers' captured activations and the prompt sets have their own dimensions."""
    import xarray as xr  # a dev dependency

    from pcr.calibrate.run import calibrate
    from pcr.collect import collect
    from pcr.export import export
    from pcr.generate import generate
    from pcr.images import reference
    from pcr.relax import relax

    para = tmp_path / "short.txt"
    para.write_text("one red circle\none blue square\n")  # a set of another size than standard's
    params = small_params(tiny_sd_dir, model={"steps": 3}, eval={"num_prompts": 3, "paraphrase_prompts": str(para)})
    t = tmp_path
    collect(params, t / "traj.zarr", progress=False)
    calibrate(params, t / "traj.zarr", t / "calib.zarr", t / "q.safetensors", t / "q.json", t / "activations.zarr", progress=False)
    reference(params, t / "ref.zarr", progress=False)
    relax(params.relax, t / "q.json", t / "schedule.json")
    export(params, t / "q.safetensors", t / "q.json", t / "calib.zarr", t / "schedule.json", t / "quantized")
    generate(params, t / "quantized", t / "ref.zarr", t / "gen.zarr", progress=False)
    for name in ("traj", "calib"):
        tree = xr.open_datatree(t / f"{name}.zarr", engine="zarr")
        assert tree["x"].dims[0] == "state" and tree.sizes["state"] == 4
        assert tree["model_output"].dims[0] == "step" and tree.sizes["step"] == 3
        assert tree["stats"]["max"].dims == ("step", "layer")
    calib = xr.open_datatree(t / "activations.zarr", engine="zarr")
    assert calib["activations"]["down_blocks.0.resnets.0.conv1"].dims[:2] == ("step", "capture")
    for name in ("ref", "gen"):
        tree = xr.open_datatree(t / f"{name}.zarr", engine="zarr")
        assert tree["images"]["standard"].shape[0] == 3 and tree["images"]["paraphrase"].shape[0] == 2
