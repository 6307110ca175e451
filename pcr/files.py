"""Writing a file so that a reader (or DVC) never sees half of it: write beside it, then rename."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that pick the format by suffix keep it);
    renamed to `path` when the block ends without error, removed otherwise.

        with atomic_path(out) as tmp:
            tmp.write_text(text)
    """
    final = Path(path)
    tmp = final.with_name(f"{final.name}.tmp{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
