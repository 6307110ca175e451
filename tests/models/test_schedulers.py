import pytest
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler
from tiny_models import SCHEDULER_CONFIG

from pcr.models.schedulers import make_scheduler, scheduler_class, scheduler_names

EXPECTED = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}


def test_registry_names():
    assert scheduler_names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_make_scheduler_keeps_the_noise_schedule(name):
    base = PNDMScheduler(**SCHEDULER_CONFIG)
    sched = make_scheduler(name, base.config)
    assert type(sched) is EXPECTED[name] is scheduler_class(name)
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps"):
        assert sched.config[key] == base.config[key]
    sched.set_timesteps(5)
    assert len(sched.timesteps) >= 5


def test_pndm_is_plms():
    config = {**SCHEDULER_CONFIG, "skip_prk_steps": False}
    assert make_scheduler("pndm", config).config.skip_prk_steps is True


def test_dpm_is_dpmsolver_plus_plus():
    assert make_scheduler("dpm++", SCHEDULER_CONFIG).config.algorithm_type == "dpmsolver++"


@pytest.mark.parametrize("name", ["plms", "DDIM", "", "euler_a"])
def test_unknown_name_names_value_and_allowed(name):
    with pytest.raises(ValueError, match="unknown scheduler") as err:
        make_scheduler(name, SCHEDULER_CONFIG)
    assert repr(name) in str(err.value)
    for allowed in EXPECTED:
        assert allowed in str(err.value)
