"""The conditioning layout reproduces the stock pipelines' classifier-free guidance exactly."""

import pytest
import torch

from pcr.models.conditioning import encode_prompts, guide, select, unet_kwargs
from pcr.models.load import load_pipeline

PROMPTS = ["a red circle on gray background", "a photo of a small blue square at the top left"]
SIZE = 32  # px, native size of the tiny pipelines
STEPS = 3
GUIDANCE = 5.0
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def pipes(tiny_sd_dir, tiny_sdxl_dir):
    return {"sd": tiny_sd_dir, "sdxl": tiny_sdxl_dir}


def _initial_latents(pipe, n: int) -> torch.Tensor:
    side = SIZE // pipe.vae_scale_factor
    shape = (n, pipe.unet.config.in_channels, side, side)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))  # [N, C, h, w]


def _hand_loop(pipe, cond, latents: torch.Tensor) -> torch.Tensor:
    """A CFG sampler written only against encode_prompts + unet_kwargs."""
    sched = pipe.scheduler
    sched.set_timesteps(STEPS)
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(0)
    kwargs = unet_kwargs(cond)
    x = latents * sched.init_noise_sigma  # [N, C, h, w]
    with torch.no_grad():
        for t in sched.timesteps:
            x_in = sched.scale_model_input(torch.cat([x, x]), t)  # [2N, C, h, w]
            eps = pipe.unet(x_in, t, **kwargs, return_dict=False)[0]
            x = sched.step(guide(eps, GUIDANCE), t, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize("scheduler", [None, "euler", "dpm++"])
@pytest.mark.parametrize("family, negative", [("sd", ""), ("sd", "blurry"), ("sdxl", ""), ("sdxl", None)])
def test_hand_loop_matches_stock_pipeline(pipes, family, negative, scheduler):
    pipe = load_pipeline(pipes[family], scheduler=scheduler, device="cpu")
    latents = _initial_latents(pipe, len(PROMPTS))
    stock = pipe(
        PROMPTS,
        negative_prompt=None if negative is None else [negative] * len(PROMPTS),
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        latents=latents.clone(),
        output_type="latent",
    ).images
    cond = encode_prompts(pipe, PROMPTS, height=SIZE, width=SIZE, negative_prompt=negative)
    ours = _hand_loop(pipe, cond, latents)
    diff = (ours - stock).abs().max().item()
    print(f"{family} negative={negative!r} scheduler={scheduler}: max abs diff {diff:.3g}")
    assert diff <= TOLERANCE
    assert (stock - latents * pipe.scheduler.init_noise_sigma).abs().max() > 1e-3  # the loop did something


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_wrong_layout_is_detected(pipes, family):
    """Negative control: swapping the CFG branches or interleaving the batch changes the result."""
    pipe = load_pipeline(pipes[family], device="cpu")
    latents = _initial_latents(pipe, len(PROMPTS))
    cond = encode_prompts(pipe, PROMPTS, height=SIZE, width=SIZE)
    right = _hand_loop(pipe, cond, latents)
    swapped = _hand_loop(pipe, {k: v.flip(1) for k, v in cond.items()}, latents)
    interleaved = {
        k: v.transpose(0, 1).reshape(v.shape) for k, v in cond.items()
    }  # rows u0 u1 | c0 c1 -> u0 c0 | u1 c1
    assert (right - swapped).abs().max() > 1e-3
    assert (right - _hand_loop(pipe, interleaved, latents)).abs().max() > 1e-3


def test_layout_shapes(pipes):
    n = len(PROMPTS)
    sd = load_pipeline(pipes["sd"], device="cpu")
    cond = encode_prompts(sd, PROMPTS, height=SIZE, width=SIZE)
    (hidden,) = cond.values()
    _, _, seq, width = hidden.shape
    assert hidden.shape == (n, 2, sd.tokenizer.model_max_length, sd.text_encoder.config.hidden_size)
    assert unet_kwargs(cond)["encoder_hidden_states"].shape == (2 * n, seq, width)

    xl = load_pipeline(pipes["sdxl"], device="cpu")
    cond = encode_prompts(xl, PROMPTS, height=SIZE, width=2 * SIZE)
    assert set(cond) == {"encoder_hidden_states", "text_embeds", "time_ids"}
    assert cond["encoder_hidden_states"].shape[:2] == (n, 2)
    assert cond["text_embeds"].shape == (n, 2, xl.text_encoder_2.config.projection_dim)
    expected_ids = torch.tensor([SIZE, 2 * SIZE, 0, 0, SIZE, 2 * SIZE], dtype=cond["time_ids"].dtype)
    assert torch.equal(cond["time_ids"], expected_ids.expand(n, 2, 6))
    added = unet_kwargs(cond)["added_cond_kwargs"]
    assert added["text_embeds"].shape == (2 * n, cond["text_embeds"].shape[-1])
    assert added["time_ids"].shape == (2 * n, 6)


def test_uncond_branch_is_the_negative_prompt(pipes):
    pipe = load_pipeline(pipes["sd"], device="cpu")
    cond = encode_prompts(pipe, PROMPTS, height=SIZE, width=SIZE)
    hidden = cond["encoder_hidden_states"]
    assert torch.equal(hidden[0, 0], hidden[1, 0])  # same empty prompt for every row
    assert not torch.allclose(hidden[0, 1], hidden[1, 1])
    one = encode_prompts(pipe, PROMPTS[1:], height=SIZE, width=SIZE)
    assert torch.allclose(
        select(cond, slice(1, 2))["encoder_hidden_states"], one["encoder_hidden_states"], atol=1e-6
    )


def test_sdxl_none_negative_is_zeros(pipes):
    pipe = load_pipeline(pipes["sdxl"], device="cpu")
    cond = encode_prompts(pipe, PROMPTS, height=SIZE, width=SIZE, negative_prompt=None)
    assert not cond["encoder_hidden_states"][:, 0].any() and not cond["text_embeds"][:, 0].any()


def test_prompts_must_be_a_list(pipes):
    pipe = load_pipeline(pipes["sd"], device="cpu")
    with pytest.raises(ValueError, match="non-empty list"):
        encode_prompts(pipe, "a red circle", height=SIZE, width=SIZE)
