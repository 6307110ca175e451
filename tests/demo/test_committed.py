"""The committed demo artifacts: judge accuracy on rendered images; the pipeline loads with stock diffusers."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pcr.demo.render import all_labels, caption, render

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.mark.skipif(not (DEMO / "judge").exists(), reason="data/demo/judge not trained yet (pcr demo train)")
def test_judge_reads_rendered_ground_truth():
    from pcr.demo.judge import attribute_accuracy, load_judge

    labels = all_labels()
    images = np.stack([render(lab, seed=5000 + i) for i, lab in enumerate(labels)])  # seeds outside the pool
    acc = attribute_accuracy(images, [caption(lab) for lab in labels], load_judge(DEMO / "judge"))
    assert acc["color_acc"] >= 0.95 and acc["shape_acc"] >= 0.95 and acc["background_acc"] >= 0.95, acc


@pytest.mark.skipif(
    not (DEMO / "pipeline").exists(), reason="data/demo/pipeline not trained yet (pcr demo train)"
)
def test_committed_pipeline_loads_offline_and_generates():
    from diffusers import StableDiffusionPipeline

    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(DEMO / "pipeline", local_files_only=True)
    assert pipe.unet.dtype == torch.float32
    image = pipe("a red circle on a gray background", num_inference_steps=5, guidance_scale=5.0,
                 generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    assert time.perf_counter() - start < 30


@pytest.mark.skipif(not (DEMO / "clip").exists(), reason="data/demo/clip not trained yet (pcr demo train)")
def test_committed_clip_loads_offline():
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(DEMO / "clip", local_files_only=True)
    processor = CLIPProcessor.from_pretrained(DEMO / "clip", local_files_only=True)
    img = render(all_labels()[0], 0)
    out = model(**processor(text=[caption(all_labels()[0])], images=[img], return_tensors="pt", padding=True))
    assert out.logits_per_image.shape == (1, 1)


@pytest.mark.skipif(
    not (DEMO / "pipeline").exists(), reason="data/demo/pipeline not trained yet (pcr demo train)"
)
def test_eval_writes_quality_and_grid(tmp_path):
    import json

    from pcr.demo.evaluate import evaluate

    prompts = DEMO.parent / "prompts"
    result = evaluate(DEMO / "pipeline", DEMO / "judge", prompts / "eval.txt", prompts / "eval_paraphrase.txt",
                      tmp_path, steps=2, guidance=4.5, limit=2)  # fmt: skip
    assert json.loads((tmp_path / "quality.json").read_text()) == result
    assert {"color_acc", "shape_acc"} <= set(result["generated"]) and result["n"] == 2
    assert (tmp_path / "grid.png").stat().st_size > 0
