"""What every stage entry point shares: argv checking and clean errors with a non-zero exit."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from pcr.errors import PcrError

USER_ERRORS = (PcrError,)  # anything else is a bug: it keeps its traceback
EXIT_USER_ERROR = 2


def paths(argv: list[str] | None, names: list[str], stage: str) -> list[str]:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != len(names):
        sys.exit(f"usage: python stages/{stage}.py {' '.join(n.upper() for n in names)} (got {len(args)} arguments: {args})")
    return args


def run(fn: Callable, *args, **kwargs) -> None:
    """Call a stage function; a bad param, model or store exits 2 with one clear line, no traceback."""
    try:
        fn(*args, **kwargs)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def read_json(path: str | Path):
    """A JSON input of a stage (e.g. a prompts snapshot written by env)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
