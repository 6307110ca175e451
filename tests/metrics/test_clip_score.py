import numpy as np
import pytest
import torch
from metrics_testlib import TEXT_POSITIONS, random_images
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

from pcr.metrics.clip_score import ClipScorer, clip_score, fit_prompts

PROMPTS = [
    "a red circle on gray background",
    "a small blue square",
    "big green circle",
    # longer than the text tower's 12 positions: truncated, keeping the end token
    "a small red square on a big blue circle on a green square on gray background",
]


def _reference_scores(clip_dir, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """100 * cos(image, text) straight from CLIPModel.get_image_features / get_text_features."""
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    proc = CLIPImageProcessor.from_pretrained(clip_dir, local_files_only=True)
    tok = CLIPTokenizer.from_pretrained(clip_dir, local_files_only=True)
    pixels = proc(images=list(images), return_tensors="pt")["pixel_values"]
    tokens = tok(prompts, padding=True, truncation=True, max_length=TEXT_POSITIONS, return_tensors="pt")
    unwrap = lambda o: o if isinstance(o, torch.Tensor) else o.pooler_output  # noqa: E731
    with torch.no_grad():
        img = unwrap(model.get_image_features(pixel_values=pixels)).double()
        txt = unwrap(
            model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        ).double()
    img = img / np.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=-1, keepdims=True)
    return 100.0 * (img * txt).sum(-1).numpy()


def test_per_image_and_mean_match_an_independent_computation(clip_dir):
    images = random_images(len(PROMPTS), seed=5)
    expected = _reference_scores(clip_dir, images, PROMPTS)
    scorer = ClipScorer.from_dir(clip_dir, batch_size=3)  # two batches, one partial
    np.testing.assert_allclose(scorer.per_image(images, PROMPTS), expected, atol=1e-3)
    assert scorer.score(images, PROMPTS) == pytest.approx(max(expected.mean(), 0.0), abs=1e-3)


def test_path_level_function_and_raw_per_image_scores(clip_dir):
    images = random_images(len(PROMPTS), seed=5)
    per = ClipScorer.from_dir(clip_dir).per_image(images, PROMPTS)
    assert per.min() < 0 < per.mean()  # per-image scores stay raw; only the mean is clipped at 0
    assert clip_score(images, PROMPTS, clip_dir) == pytest.approx(per.mean(), abs=1e-3)


def test_long_prompt_is_cut_to_the_text_positions(clip_dir):
    """torchmetrics would slice the token ids, dropping the end token CLIP pools (score 1.1 instead of 14.8)."""
    scorer = ClipScorer.from_dir(clip_dir)
    fitted = fit_prompts(scorer.processor, PROMPTS, TEXT_POSITIONS)
    assert fitted[:3] == PROMPTS[:3]
    ids = scorer.processor.tokenizer(fitted[3]).input_ids
    assert len(ids) == TEXT_POSITIONS and ids[-1] == scorer.processor.tokenizer.eos_token_id


def test_torchmetrics_issue_3407_is_why_the_adapter_exists(clip_dir):
    """Raw CLIPModel into torchmetrics' CLIPScore fails on transformers 5; the adapter fixes it."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    scorer = ClipScorer.from_dir(clip_dir)
    raw = CLIPScore(model_name_or_path=lambda: (scorer.clip.model, scorer.processor))
    images = torch.from_numpy(random_images(2)).permute(0, 3, 1, 2)
    try:
        raw.update(images, PROMPTS[:2])
    except AttributeError as err:
        assert "norm" in str(err)
    else:
        pytest.skip("this torchmetrics/transformers pair no longer has issue 3407")


def test_prompt_count_must_match(clip_dir):
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        ClipScorer.from_dir(clip_dir).score(random_images(3), PROMPTS[:2])
