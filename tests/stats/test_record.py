"""StatsRecorder's hooks against RunningStats.update per input (itself checked against torch's observers)."""

import pytest
import torch
from torch import nn

from pcr.stats.record import AllRecorded, StatsRecorder, batch_minmax
from pcr.stats.running import RunningStats


class Net(nn.Module):
    """q, k, v read one tensor (as attention does); `twice` runs twice per pass; `idle` never runs; `after`
    reads x after an in-place change."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.twice, self.idle, self.after = (nn.Linear(6, 6) for _ in range(6))

    def forward(self, x):
        h = self.q(x) + self.k(x) + self.v(x)
        h = self.twice(self.twice(h))
        x.mul_(3.0)  # same tensor object, new version: its statistics must be taken again
        return h + self.after(x)


NAMES = ["q", "k", "v", "twice", "idle", "after"]


def _reference(inputs: dict[str, list], c: float) -> dict[str, RunningStats]:
    ref = {n: RunningStats(ema_constant=c) for n in NAMES}
    for n, xs in inputs.items():
        for x in xs:
            ref[n].update(x)
    return ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recorded_statistics_equal_running_stats_per_input(dtype):
    torch.manual_seed(0)
    net, c = Net().to(dtype), 0.25
    inputs = {n: [] for n in NAMES}
    spies = [net.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: inputs[n].append(a[0].clone())) for n in NAMES]
    with StatsRecorder(net, NAMES, histogram=False, ema_constant=c) as rec:
        rec.start()
        for scale in (1.0, 5.0, 0.5):  # three batches: the EMA folds them in order
            net(torch.randn(4, 6, dtype=dtype) * scale)
        stats = rec.stats
    for h in spies:
        h.remove()
    ref = _reference(inputs, c)
    for n in NAMES:
        s, r = stats[n], ref[n]
        assert s.count == r.count == len(inputs[n]), n
        for f in ("min", "max", "ema_min", "ema_max"):
            assert torch.equal(getattr(s, f), getattr(r, f)), (n, f)
            assert getattr(s, f).dtype == torch.float32
    assert stats["idle"].count == 0 and stats["idle"].min == float("inf")
    assert not torch.equal(stats["after"].max, stats["q"].max)  # after saw x * 3, not the memo of q's input


def test_one_count_per_layer_folds_all_layers_at_once_and_nan_propagates():
    net = Net()
    names = ["q", "k", "v", "after"]  # each called once per pass: the vectorised fold
    with StatsRecorder(net, names, histogram=False, ema_constant=0.1) as rec:
        rec.start()
        net(torch.randn(2, 6))
        x = torch.randn(2, 6)
        x[0, 0] = float("nan")
        net(x)
        stats = rec.stats
    assert all(stats[n].count == 2 for n in names)
    assert torch.isnan(stats["q"].min) and torch.isnan(stats["q"].ema_max)


def test_batch_minmax_is_aminmax():
    x = torch.randn(3, 1000)
    for t in (x, x.half(), x.double(), x.t(), x.bfloat16()):
        lo, hi = torch.aminmax(t)
        assert tuple(float(v) for v in batch_minmax(t)) == (float(lo), float(hi))


def test_stop_after_ends_the_pass_once_enough_inputs_are_recorded():
    net = Net()
    with StatsRecorder(net, NAMES, histogram=False) as rec:
        rec.start()
        rec.recorded, rec.stop_after = 0, 3
        with pytest.raises(AllRecorded):
            net(torch.randn(2, 6))
        assert rec.recorded == 3 and [rec.stats[n].count for n in NAMES] == [1, 1, 1, 0, 0, 0]
        rec.recording = False  # not recording: never stops, nothing recorded
        net(torch.randn(2, 6))
        assert rec.recorded == 3


def test_capture_keeps_the_first_call_rows_and_hooks_leave_with_the_block():
    net = Net()
    x = torch.randn(4, 6)
    with StatsRecorder(net, NAMES, histogram=True) as rec:
        rec.capture_layers, rec.capture_rows, rec.recording = {"twice"}, slice(1, 3), False
        net(x.clone())
        assert set(rec.captured) == {"twice"} and rec.captured["twice"].shape == (2, 6)
    assert all(not net.get_submodule(n)._forward_pre_hooks for n in NAMES)


def test_layers_fed_one_tensor_share_its_histogram_and_statistics_stay_per_input(monkeypatch):
    import pcr.stats.running as running

    torch.manual_seed(1)
    net = Net()
    inputs = {n: [] for n in NAMES}
    spies = [net.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: inputs[n].append(a[0].clone())) for n in NAMES]
    calls = []
    counted = running.histogram
    monkeypatch.setattr(running, "histogram", lambda *a: calls.append(a[1:]) or counted(*a))
    with StatsRecorder(net, NAMES, histogram=True, ema_constant=0.1) as rec:
        rec.start()
        for scale in (1.0, 5.0, 0.5):
            net(torch.randn(4, 6) * scale)
        stats = rec.stats
    recorded_calls = len(calls)
    for h in spies:
        h.remove()
    ref = {n: RunningStats(histogram=True, ema_constant=0.1) for n in NAMES}
    for n, xs in inputs.items():
        for x in xs:
            ref[n].update(x)
    for n in NAMES:
        for f in ("min", "max", "ema_min", "ema_max", "hist"):
            assert torch.equal(getattr(stats[n], f), getattr(ref[n], f)), (n, f)
    # per pass: q/k/v one tensor (1 histogram), `twice` two tensors (2), `after` x changed in place (1): 4, not 6
    assert recorded_calls == 3 * 4
