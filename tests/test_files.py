"""atomic_path: the final file appears whole, or not at all."""

import pytest

from pcr.files import atomic_path


def test_written_file_appears_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "m.json"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            assert tmp.suffix == ".json" and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed while writing")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
