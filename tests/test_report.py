from pcr.report import CLAIMS, COLUMNS, fp32_row, markdown, rows


def test_rows_cover_the_issue_table():
    table = dict(rows())
    assert {f"W8A{a} {m}" for a in (8, 6, 4) for m in ("shared", "fp32", "progressive")} <= set(table)
    assert {f"W8A8 progressive + relax 20% {w}" for w in ("x0", "xT", "auto")} <= set(table)
    assert {"W4A8 progressive", "W4A8 progressive adaround"} <= set(table)
    assert table["W8A8 progressive + relax 20% xT"]["relax.where"] == "xT"
    keys = set(table["W8A8 shared"])
    assert all(set(o) >= keys for o in table.values())  # every row sets what any row changes: rows don't inherit
    assert all(a in table and b in table for a, b in CLAIMS)


def test_markdown_table_formats_nested_keys_and_missing_values():
    m = {"fid_fp32": 1.234, "average_bits": 8.4, "paraphrase": {"fid_fp32": 2.5}, "fp32": {"fid_real": 9.0, "clip_score": 30.0}}
    text = markdown([("FP32", fp32_row(m)), ("W8A8", m)])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].count("|") == len(COLUMNS) + 2
    assert "| W8A8 | 8.40 | 1.2340 |" in text and "2.5000" in text
    assert lines[2].startswith("| FP32 | 32.00 | – |")
