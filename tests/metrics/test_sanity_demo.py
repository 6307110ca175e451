"""QDiffBench sanity checks on the shipped demo model: lower weight bits give worse FID to FP32."""

from pathlib import Path

import numpy as np
import pytest

from pcr.config import Params
from pcr.metrics.qdiffbench import qdiffbench
from pcr.models.conditioning import select
from pcr.quant.quantize import qmodules, quantize_model
from pcr.sampling import conditioning, decode, load_sampler, sample

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data/demo"
pytestmark = pytest.mark.skipif(not (DEMO / "pipeline/model_index.json").is_file(), reason="demo model not shipped")


def _images(params, weight_bits, prompts):
    pipe, sampler = load_sampler(params.model)
    if weight_bits:
        quantize_model(pipe.unet, Params.from_dict({"quant": {"weight_bits": weight_bits}}).quant, sampler.timesteps.tolist())
        for q in qmodules(pipe.unet).values():
            q.input_quant.enabled = False  # weights only: the effect of weight bits alone
    cond = conditioning(pipe, prompts, params.model, sampler)
    latents = sample(sampler, select(cond, slice(0, len(prompts))), list(range(len(prompts))))
    return decode(pipe, latents)


def test_w4_is_worse_than_w8_in_fid_to_fp32():
    params = Params.from_dict({"model": {"path": str(DEMO / "pipeline"), "steps": 8, "device": "cpu"}})
    prompts = (ROOT / "data/prompts/eval.txt").read_text().splitlines()[:24]
    fp32, w8, w4 = (_images(params, b, prompts) for b in (None, 8, 4))
    score = {b: qdiffbench(img, fp32, None, prompts, feature="clip", feature_path=DEMO / "clip", clip_path=None, kid_subset_size=12)
             for b, img in ((8, w8), (4, w4))}
    print({b: (s["fid_fp32"], s["psnr_fp32"]) for b, s in score.items()})
    assert score[4]["fid_fp32"] > score[8]["fid_fp32"]
    assert score[4]["psnr_fp32"] < score[8]["psnr_fp32"]
    self_score = qdiffbench(fp32, fp32, None, prompts, feature="clip", feature_path=DEMO / "clip", clip_path=None, kid_subset_size=12)
    assert abs(self_score["fid_fp32"]) < 1e-3 and self_score["kid_fp32"] == 0.0  # FP32 against itself (sqrtm noise)
    assert not np.array_equal(w4, fp32)
