from transformers import CLIPTokenizer

from pcr.demo.tokenizer import EOS, build_clip_tokenizer

WORDS = ["a", "red", "circle", "on", "gray", "background", "small", "top", "left", "at", "the"]


def test_each_word_is_one_token_and_roundtrips(tmp_path):
    tok = build_clip_tokenizer(WORDS, tmp_path, max_length=16)
    ids = tok("a small red circle at the top left").input_ids
    assert len(ids) == 8 + 2  # BOS + 8 words + EOS
    assert tok.convert_ids_to_tokens(ids[-1]) == EOS
    loaded = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded("a red circle on gray background").input_ids == tok("a red circle on gray background").input_ids
    assert loaded.decode(ids, skip_special_tokens=True).strip() == "a small red circle at the top left"


def test_unknown_word_falls_back_to_bytes(tmp_path):
    tok = build_clip_tokenizer(WORDS, max_length=16)
    ids = tok("purple").input_ids
    assert len(ids) == 2 + len("purple")  # one token per byte, never the unknown token
    assert tok.unk_token_id not in ids[1:-1]
