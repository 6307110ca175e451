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


def _loop_mse_range(stats, bits, symmetric):
    """The MSE activation search one candidate at a time (the rule as first written): the reference."""
    from pcr.quant.observers.mse import CLIP_GRID

    x, weight = stats.bin_centers().float(), stats.hist.float()
    best, best_err = (stats.min.clone(), stats.max.clone()), float("inf")
    for alpha in CLIP_GRID:
        lo, hi = stats.min * alpha, stats.max * alpha
        scale, zp = params_from_range(lo, hi, bits, symmetric)
        err = float((weight * (fake_quantize(x, scale, zp, bits, symmetric) - x) ** 2).sum())
        if err < best_err:
            best, best_err = (lo.clone(), hi.clone()), err
    return best


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_range_is_the_first_least_error_candidate_of_the_loop(bits, symmetric):
    g = torch.Generator().manual_seed(bits + 10 * symmetric)
    picked = []
    for i in range(12):  # heavy and light tails, skewed and one-signed inputs
        x = torch.distributions.StudentT(1.5 + i).sample((4000,)) * (1 + i) + (0.3 * i if i % 3 else 0.0)
        x = x.abs() if i % 4 == 3 else x
        x = x + 0.01 * torch.randn(x.shape, generator=g)
        s = RunningStats(histogram=True)
        s.update(x)
        lo, hi = get_observer("mse").activation_range(s, bits, symmetric)
        ref_lo, ref_hi = _loop_mse_range(s, bits, symmetric)
        assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi), i
        picked.append(round(float(hi / s.max), 4))
    if bits < 8:  # the search is not trivial: it clips below min/max somewhere (at 8 bits it rarely does)
        assert min(picked) < 1.0


@pytest.mark.parametrize("name", ["mse", "percentile"])
def test_rules_that_read_histograms_refuse_statistics_without_one(name):
    s = RunningStats(histogram=False)
    s.update(torch.randn(100))
    with pytest.raises(ValueError, match=f"act_observer='{name}' at 4 bits needs activation histograms"):
        get_observer(name).activation_range(s, 4, False)


def test_histograms_are_needed_exactly_where_a_rule_reads_them():
    auto, mse, minmax = get_observer("auto"), get_observer("mse"), get_observer("minmax")
    assert [auto.needs_histogram(b) for b in (2, 4, 7, 8, 10, 16)] == [True, True, True, False, False, False]
    assert all(mse.needs_histogram(b) for b in range(2, 17)) and not any(minmax.needs_histogram(b) for b in range(2, 17))
    assert auto.needs_histogram_from(4) and auto.needs_histogram_from(7) and not auto.needs_histogram_from(8)
    s = RunningStats(histogram=False)  # what a run that needs none records: auto at 8 and above still works
    s.update(torch.randn(100))
    assert torch.equal(torch.stack(auto.activation_range(s, 8, False)), torch.stack(minmax.activation_range(s, 8, False)))
