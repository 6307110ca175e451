import pytest
import torch
from torch.ao.quantization import MovingAverageMinMaxObserver

from pcr.quant.affine import fake_quantize, params_from_range
from pcr.quant.observers import OBSERVERS, RunningStats, get_observer


def _stream(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2000, generator=g) * (1 + 0.5 * i) for i in range(n)]


def test_registry_lists_the_five_observers():
    assert set(OBSERVERS) == {"minmax", "ema_minmax", "percentile", "mse", "auto"}
    with pytest.raises(ValueError, match=r"observer 'nope' is unknown: allowed are \['auto', 'ema_minmax', 'minmax', 'mse', 'percentile'\]"):
        get_observer("nope")


def test_minmax_follows_its_definition():
    batches = _stream()
    s = RunningStats()
    for b in batches:
        s.update(b)
    lo, hi = get_observer("minmax").activation_range(s, 8, False)
    assert float(lo) == min(float(b.min()) for b in batches) and float(hi) == max(float(b.max()) for b in batches)


@pytest.mark.parametrize("c", [0.01, 0.1, 0.37])
def test_ema_minmax_is_torchs_moving_average_observer_bit_for_bit(c):
    batches = [b * 3 + 0.1 * i for i, b in enumerate(_stream(3, n=12))]
    s = RunningStats(ema_constant=c)
    ref = MovingAverageMinMaxObserver(averaging_constant=c, quant_min=0, quant_max=255)
    for b in batches:
        s.update(b)
        ref(b)
        lo, hi = get_observer("ema_minmax").activation_range(s, 8, False)
        assert torch.equal(lo, ref.min_val) and torch.equal(hi, ref.max_val)
    scale, zero_point = params_from_range(lo, hi, 8, False)
    ref_scale, ref_zero_point = ref.calculate_qparams()
    assert torch.equal(scale.reshape(1), ref_scale) and int(zero_point) == int(ref_zero_point)


def test_histogram_survives_rebinning_and_percentile_matches_quantile():
    batches = _stream(1)
    s = RunningStats(histogram=True)
    for b in batches:
        s.update(b)
    assert float(s.hist.sum()) == sum(b.numel() for b in batches)
    allx = torch.cat(batches)
    lo, hi = get_observer("percentile").activation_range(s, 8, False)
    width = float(s.max - s.min) / s.bins
    assert float(hi) == pytest.approx(float(torch.quantile(allx, 0.9999)), abs=4 * width)
    assert float(lo) == pytest.approx(float(torch.quantile(allx, 0.0001)), abs=4 * width)


@pytest.mark.parametrize("bits", [3, 4])
def test_mse_range_beats_minmax_on_heavy_tails(bits):
    torch.manual_seed(2)
    x = torch.distributions.StudentT(2.0).sample((20000,))
    s = RunningStats(histogram=True)
    s.update(x)

    def mse(rng):
        scale, zp = params_from_range(*rng, bits, False)
        return float(((fake_quantize(x, scale, zp, bits, False) - x) ** 2).mean())

    assert mse(get_observer("mse").activation_range(s, bits, False)) < mse(get_observer("minmax").activation_range(s, bits, False))
    w = torch.distributions.StudentT(2.0).sample((8, 256))
    lo, hi = get_observer("mse").weight_range(w, bits, False)
    lo_m, hi_m = get_observer("minmax").weight_range(w, bits, False)
    for lo_, hi_, ref in ((lo, hi, "mse"), (lo_m, hi_m, "minmax")):
        scale, zp = params_from_range(lo_, hi_, bits, False)
        err = ((fake_quantize(w, scale, zp, bits, False, axis=0) - w) ** 2).sum(1)
        if ref == "mse":
            best = err
        else:
            assert (best <= err + 1e-6).all()


def test_stats_roundtrip_through_tensors():
    s = RunningStats(histogram=True)
    for b in _stream(3):
        s.update(b)
    t = RunningStats.from_tensors(s.as_tensors())
    for name, o in OBSERVERS.items():
        a, b = o.activation_range(s, 6, False), o.activation_range(t, 6, False)
        assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1]), name


@pytest.mark.parametrize("bits", [4, 6, 7, 8, 10])
def test_auto_searches_below_8_bits_and_keeps_min_max_from_8(bits):
    s = RunningStats(histogram=True)
    for b in _stream(5):
        s.update(torch.cat([b, torch.tensor([40.0])]))  # one outlier: MSE clips it at low bits
    w = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    w[0, 0] = 12.0
    ref = get_observer("mse" if bits < 8 else "minmax")
    lo, hi = get_observer("auto").activation_range(s, bits, False)
    ref_lo, ref_hi = ref.activation_range(s, bits, False)
    assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi)
    assert torch.equal(torch.stack(get_observer("auto").weight_range(w, bits, False)), torch.stack(ref.weight_range(w, bits, False)))
    assert (float(hi) < 40.0) == (bits < 8)  # visible: the outlier is clipped exactly where auto searches
