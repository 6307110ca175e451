import json

import pytest

from pcr.config import ConfigError, RelaxConfig
from pcr.relax import Schedule, make_schedule, relax


@pytest.mark.parametrize("fraction,where,steps,relaxed", [
    (0.05, "x0", 20, (19,)), (0.2, "x0", 20, (16, 17, 18, 19)), (0.2, "xT", 20, (0, 1, 2, 3)),
    (0.0, "x0", 20, ()), (1.0, "xT", 5, (0, 1, 2, 3, 4)),
])
def test_schedule_places_relaxed_steps(fraction, where, steps, relaxed):
    s = make_schedule(RelaxConfig(fraction=fraction, where=where, bits=10), steps, 8)
    assert s.relaxed_steps == relaxed
    assert [k for k, b in enumerate(s.bits) if b == 10] == list(relaxed)


def test_five_percent_at_ten_bits_over_eight_averages_8_1():
    assert make_schedule(RelaxConfig(fraction=0.05, where="x0", bits=10), 20, 8).average_bits == pytest.approx(8.1)


@pytest.mark.parametrize("kwargs,msg", [
    ({"fraction": 1.5}, r"relax.fraction=1.5 is not allowed: use a number in \[0, 1\]"),
    ({"fraction": -0.1}, r"relax.fraction=-0.1"),
    ({"where": "middle"}, r"relax.where='middle' is not allowed: choose one of \['auto', 'x0', 'xT'\]"),
    ({"bits": 17}, r"relax.bits=17 is not allowed"),
])
def test_bad_relax_config(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        RelaxConfig(**kwargs)


def test_relax_writes_schedule_json(tmp_path):
    from pcr.quant.quantize import LayerQuant, QuantMap

    QuantMap(10, "mse", "minmax", {"a": LayerQuant("QLinear", 8, False, 8, False)}).save(tmp_path / "q.json")
    relax(RelaxConfig(fraction=0.1, where="xT", bits=12), tmp_path / "q.json", tmp_path / "s.json")
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["bits"] == [12] + [8] * 9 and d["average_bits"] == pytest.approx(8.4)
    assert Schedule.load(tmp_path / "s.json").bits == tuple(d["bits"])
