import numpy as np
import pytest

from pcr.demo.render import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    TEMPLATES,
    Labels,
    all_labels,
    caption,
    parse_caption,
    prompt_sets,
    render,
    render_caption,
    sample_labels,
    vocabulary,
)


def test_render_is_deterministic_by_seed():
    lab = Labels("red", "star", "gray")
    a, b, c = render(lab, 3), render(lab, 3), render(lab, 4)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(render_caption("a red star on a gray background", 3), a)


def test_render_shows_both_colours():
    img = render(Labels("blue", "square", "white"), 0).reshape(-1, 3)
    assert (img == COLORS["blue"]).all(1).sum() > 100
    assert (img == BACKGROUNDS["white"]).all(1).sum() > 300


@pytest.mark.parametrize("template", TEMPLATES)
def test_caption_parse_roundtrip_for_every_template(template):
    for lab in all_labels():
        assert parse_caption(caption(lab, template)) == lab


def test_parse_is_lenient_on_case_and_spaces():
    assert parse_caption("  A Red   Circle on a gray background ") == Labels("red", "circle", "gray")


@pytest.mark.parametrize(
    "text", ["a purple circle on a gray background", "a red circle", "", "red circle on gray"]
)
def test_unparseable_caption_raises_clear_error(text):
    with pytest.raises(ValueError, match="cannot parse caption") as err:
        parse_caption(text)
    assert repr(text) in str(err.value) and "expected" in str(err.value)


def test_bad_labels_name_the_value():
    with pytest.raises(ValueError, match="'purple'"):
        Labels("purple", "circle", "gray")
    with pytest.raises(ValueError, match="unknown caption template"):
        caption(Labels("red", "circle", "gray"), "{color}")


def test_vocabulary_covers_every_caption_word():
    vocab = set(vocabulary())
    for template in TEMPLATES:
        for word in (
            caption(Labels("red", "circle", "gray"), template).replace(",", " ").replace(";", " ").split()
        ):
            assert word in vocab
    assert set(SHAPES) <= vocab


def test_sample_labels_is_seeded():
    a = [sample_labels(np.random.default_rng(1)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_prompt_sets_are_disjoint_and_parse(tmp_path):
    sets = prompt_sets()
    assert len(sets["calibration"]) == 64 and len(sets["eval"]) == 200 and len(sets["eval_paraphrase"]) == 100
    assert len(set(sets["eval"])) == 200 and not set(sets["eval"]) & set(sets["calibration"])
    assert all(c.startswith("a ") and c.endswith(" background") for c in sets["eval"])
    assert not set(sets["eval_paraphrase"]) & set(sets["calibration"])
    for lines in sets.values():
        for line in lines:
            parse_caption(line)
    assert prompt_sets() == sets


def test_committed_prompt_files_match_the_generator():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "data" / "prompts"
    for name, lines in prompt_sets().items():
        assert (root / f"{name}.txt").read_text().splitlines() == lines
