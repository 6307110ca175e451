"""Load a project script that is not a package module (stages/*.py, benchmarks/*.py) by its path."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """The module of ROOT/relpath, registered in sys.modules (dataclasses and pickling need it there)."""
    path = ROOT / relpath
    name = "pcr_script_" + "_".join(Path(relpath).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
