"""reduce_step_stats over several processes gives what one process gives, and that is torch's observer."""

import torch
from torch.ao.quantization import MovingAverageMinMaxObserver

import pcr.distributed as D
from pcr.quant.observers import RunningStats

NAMES = ["a", "b"]


class FakeState:
    def __init__(self, num_processes):
        self.num_processes = num_processes


def _batches(n=7):
    g = torch.Generator().manual_seed(0)
    return [{name: torch.randn(64, generator=g) * (1 + i) + j for j, name in enumerate(NAMES)} for i in range(n)]


def _per_batch(data, owned, c):
    out = {}
    for b in owned:
        out[b] = {n: RunningStats(histogram=True, ema_constant=c) for n in NAMES}
        for n in NAMES:
            out[b][n].update(data[b][n])
    return out


def test_two_processes_reduce_to_the_one_process_result_which_is_torchs_observer(monkeypatch):
    c, data = 0.01, _batches()
    n = len(data)
    one = D.reduce_step_stats(_per_batch(data, range(n), c), n, NAMES, FakeState(1), histogram=True, ema_constant=c)

    # Rank 1 owns batches 4..6 and rank 0 owns 0..3: all_reduce combines the ranks' tables, call by call.
    sent = []
    monkeypatch.setattr(D, "_all_reduce", lambda t, op, state: sent.append(t.clone()) or t)
    D.reduce_step_stats(_per_batch(data, range(4, n), c), n, NAMES, FakeState(2), histogram=True, ema_constant=c)
    combine = {D.dist.ReduceOp.MIN: torch.minimum, D.dist.ReduceOp.MAX: torch.maximum, D.dist.ReduceOp.SUM: torch.add}
    calls = iter(sent)
    monkeypatch.setattr(D, "_all_reduce", lambda t, op, state: combine[op](t, next(calls)))
    two = D.reduce_step_stats(_per_batch(data, range(4), c), n, NAMES, FakeState(2), histogram=True, ema_constant=c)

    for k in ("min", "max", "ema_min", "ema_max", "hist"):
        assert (one[k] == two[k]).all(), k
    for i, name in enumerate(NAMES):
        ref = MovingAverageMinMaxObserver(averaging_constant=c)
        for batch in data:
            ref(batch[name])
        assert one["ema_min"][i] == ref.min_val.item() and one["ema_max"][i] == ref.max_val.item()
