"""dvc.yaml lists, per stage, exactly the source files its script imports and the param keys it reads."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from depgraph import ROOT, closure

from pcr.config import Params

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
LAUNCHED = {"collect", "reference", "generate"}
FP32_STAGES = ("collect", "reference")
MODEL_STAGES = ("collect", "weights", "reference", "calibrate", "export", "generate")


def leaf_keys(obj, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        out |= leaf_keys(v, key + ".") if dataclasses.is_dataclass(v) else {key}
    return out


ALL_KEYS = leaf_keys(Params())


@pytest.mark.parametrize("stage", list(DVC))
def test_source_deps_are_exactly_the_import_closure(stage):
    script = ROOT / "stages" / f"{stage}.py"
    listed = {d for d in DVC[stage]["deps"] if d.endswith(".py")}
    wanted = closure(script)
    assert listed == wanted, f"missing: {sorted(wanted - listed)}; not read: {sorted(listed - wanted)}"


@pytest.mark.parametrize("stage", FP32_STAGES)
def test_fp32_stages_import_no_quantization_code(stage):
    quant = sorted(f for f in closure(ROOT / "stages" / f"{stage}.py") if f.startswith("pcr/quant/"))
    assert quant == [], f"{stage} imports quantization code: editing it would rerun the FP32 stage"


@pytest.mark.parametrize("stage", list(DVC))
def test_params_are_single_keys_and_command(stage):
    params = DVC[stage]["params"]
    if stage == "env":  # validates the whole file, and runs on every repro anyway
        assert params == [{"params.yaml": None}] and DVC[stage]["always_changed"] is True
    else:
        assert all(isinstance(p, str) for p in params) and set(params) <= ALL_KEYS, sorted(set(params) - ALL_KEYS)
        assert len(params) == len(set(params))
    # the stages that scale out run under the launcher prefix (empty: a plain python command)
    prefix = "${run.launcher} " if stage in LAUNCHED else ""
    assert DVC[stage]["cmd"].startswith(f"{prefix}python stages/{stage}.py params.yaml ")


def test_no_dep_is_templated_from_a_nullable_prompt_path():
    for stage in DVC.values():
        assert not any("prompts}" in d for d in stage["deps"])  # prompts reach the stages through env's snapshots


@pytest.mark.parametrize("stage", MODEL_STAGES + ("score",))
def test_model_stages_depend_on_library_versions(stage):
    group = "scoring" if stage == "score" else "sampling"
    assert f"outputs/env/versions_{group}.json" in DVC[stage]["deps"]


def test_every_stage_has_a_script_and_cli_command():
    from typer.main import get_command

    from pcr.cli import app

    commands = set(get_command(app).commands)
    for stage in DVC:
        assert (ROOT / "stages" / f"{stage}.py").is_file()
        assert stage in commands
    assert {Path(p).stem for p in (ROOT / "stages").glob("*.py")} == set(DVC)
