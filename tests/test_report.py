from pcr.report import COLUMNS, fp32_row, markdown, rows


def test_rows_cover_the_issue_table():
    labels = [label for label, _ in rows()]
    assert labels[:5] == ["W8A8 shared", "W8A8 fp32", "W8A8 progressive", "W8A8 progressive + relax 20% x0",
                          "W8A8 progressive + relax 20% xT"]
    assert len(labels) == 10 and labels[5].startswith("W4A8")
    overrides = dict(rows()[4][1])
    assert overrides["relax.where"] == "xT" and overrides["relax.fraction"] == 0.2


def test_markdown_table_formats_nested_keys_and_missing_values():
    m = {"fid_fp32": 1.234, "average_bits": 8.4, "paraphrase": {"fid_fp32": 2.5}, "fp32": {"fid_real": 9.0, "clip_score": 30.0}}
    text = markdown([("FP32", fp32_row(m)), ("W8A8", m)])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].count("|") == len(COLUMNS) + 2
    assert "| W8A8 | 8.40 | 1.2340 |" in text and "2.5000" in text
    assert lines[2].startswith("| FP32 | 32.00 | – |")
