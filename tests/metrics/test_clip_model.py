import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pcr.errors import ConfigError
from pcr.metrics.clip_model import _as_tensor, load_clip_model, load_clip_processor


def test_as_tensor_accepts_both_transformers_generations():
    emb = torch.randn(3, 4)
    assert _as_tensor(emb, "image") is emb  # transformers 4: the tensor itself
    wrapped = BaseModelOutputWithPooling(last_hidden_state=torch.randn(3, 5, 8), pooler_output=emb)
    assert _as_tensor(wrapped, "image") is emb  # transformers 5: pooler_output is the projected embedding
    with pytest.raises(TypeError, match="pooler_output"):
        _as_tensor(("not", "features"), "text")


def test_adapter_returns_projected_tensors(clip_dir):
    clip = load_clip_model(clip_dir)
    proc = load_clip_processor(clip_dir, clip)
    tokens = proc(text=["a red circle", "a big blue square"], return_tensors="pt", padding=True)
    txt = clip.get_text_features(tokens["input_ids"], tokens["attention_mask"])
    img = clip.get_image_features(torch.randn(2, 3, 32, 32))
    assert isinstance(txt, torch.Tensor) and txt.shape == img.shape == (2, clip.embed_dim)


def test_no_directory_raises(tmp_path):
    with pytest.raises(ConfigError, match="got None"):
        load_clip_model(None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_clip_processor(tmp_path / "missing")
