"""dvc.yaml lists, per stage, exactly the source files its script imports and the params it reads."""

from pathlib import Path

import pytest
import yaml
from depgraph import ROOT, closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = {
    "collect": ["model", "collect", "quant.ema_constant"], "reference": ["model", "eval"], "calibrate": ["model", "quant", "calibrate"],
    "weights": ["model"] + [f"quant.{k}" for k in ("weight_bits", "weight_symmetric", "weight_observer", "weight_method", "recon", "include", "exclude", "keep_float")],
    "relax": ["relax"], "generate": ["model", "eval", "generate"], "score": ["score"],
}
LAUNCHED = {"collect", "reference", "generate"}


@pytest.mark.parametrize("stage", list(DVC))
def test_source_deps_are_exactly_the_import_closure(stage):
    script = ROOT / "stages" / f"{stage}.py"
    listed = {d for d in DVC[stage]["deps"] if d.endswith(".py")}
    wanted = closure(script)
    assert listed == wanted, f"missing: {sorted(wanted - listed)}; not read: {sorted(listed - wanted)}"


@pytest.mark.parametrize("stage", list(DVC))
def test_params_sections_and_command(stage):
    assert DVC[stage]["params"] == PARAMS[stage]
    # the stages that scale out run under the launcher prefix (empty: a plain python command)
    prefix = "${run.launcher} " if stage in LAUNCHED else ""
    assert DVC[stage]["cmd"].startswith(f"{prefix}python stages/{stage}.py params.yaml ")


def test_every_stage_has_a_script_and_cli_command():
    from typer.main import get_command

    from pcr.cli import app

    commands = set(get_command(app).commands)
    for stage in DVC:
        assert (ROOT / "stages" / f"{stage}.py").is_file()
        assert stage in commands
    assert {Path(p).stem for p in (ROOT / "stages").glob("*.py")} == set(DVC)
