"""benchmarks/openvino_cpu.py's profile section: what each executed node counts as, and a refusal without models."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import openvino_cpu as bench  # noqa: E402


@pytest.mark.parametrize(("node_type", "name", "part"), [
    ("Subgraph", "__module.unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1/aten::scaled_dot_product_attention/X",
     "attention (MHA subgraphs)"),
    ("Subgraph", "__module.unet.down_blocks.0.attentions.0.proj_in/aten::add/Add_1", "other fused elementwise subgraphs"),
    ("Convolution", "__module.unet.down_blocks.0.resnets.0.conv1/aten::_convolution/Convolution", "convolutions"),
    ("FullyConnectedQuantizedLegacy", "to_q/aten::linear/MatMul/DequantizationMul", "fully connected"),
    ("Transpose", "Transpose_74078", "reorders and transposes"),
    ("Gather", "to_q/aten::index_select/Gather_2", "step-table gathers"),
    ("MVN", "norm1/aten::layer_norm/MVN", "other"),
])
def test_each_executed_node_counts_in_one_part(node_type, name, part):
    assert bench.part_of(node_type, name) == part


def test_profile_without_the_speed_sections_models_is_refused_and_writes_nothing(tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit, match=r"missing: .*sd15_symmetric_openvino.*run --only speed --work"):
        bench.main(["--only", "profile", "--work", str(tmp_path / "work"), "--out", str(out)])
    assert not out.exists()
