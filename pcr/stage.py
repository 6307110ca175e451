"""What every stage entry point shares: argv checking and clean errors with a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pcr.errors import ConfigError, ModelError, StoreError

USER_ERRORS = (ConfigError, ModelError, StoreError, ValueError, FileNotFoundError)
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
