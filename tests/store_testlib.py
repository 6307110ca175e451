"""Hand-built trajectory / calibration stores: known ranges and states, no model."""

from pcr.stores import add_array, create_store, finish_store


def trajectory_store(path, kind, x, layers, lo, hi, **attrs):
    """A complete store of `kind` with x [T+1, N, C, h, w] and stats/min, stats/max [T, L]."""
    g = create_store(path, kind, layers=layers, **attrs)
    add_array(g, "x", x.shape, "float32", ("state", "sample", "channel", "height", "width"), x.shape)[:] = x
    for name, v in (("min", lo), ("max", hi)):
        add_array(g, f"stats/{name}", v.shape, "float32", ("step", "layer"), v.shape)[:] = v
    finish_store(g, path)
