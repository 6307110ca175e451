"""The training loop resumes after a kill exactly where an uninterrupted run would be."""

import pytest
import torch

from pcr.demo.loop import LoopConfig, train

CFG = LoopConfig(steps=6, lr=1e-2, warmup=2, ema_decay=0.9, ckpt_every=2)


def make_step(model, fail_at=None):
    def step(i):
        if i == fail_at:
            raise KeyboardInterrupt
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(8, 3, generator=gen)
        return ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()

    return step


def test_killed_run_resumes_and_matches(tmp_path):
    torch.manual_seed(0)
    ref = torch.nn.Linear(3, 1)
    ref_ema = train("ref", ref, make_step(ref), CFG, tmp_path / "ref.ckpt")

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    with pytest.raises(KeyboardInterrupt):
        train("a", model, make_step(model, fail_at=3), CFG, tmp_path / "a.ckpt")
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["step"] == 2
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    ema = train("a", model, make_step(model), CFG, tmp_path / "a.ckpt")
    for p, q in zip(ema.parameters(), ref_ema.parameters(), strict=True):
        assert torch.allclose(p, q)


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0, "lr": 1e-3}, {"steps": 1, "lr": 0.0}, {"steps": 1, "lr": 1e-3, "ema_decay": 1.0}]
)
def test_bad_loop_config_is_refused(kwargs):
    with pytest.raises(ValueError, match="LoopConfig"):
        LoopConfig(**kwargs)
