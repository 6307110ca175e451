import pytest
import yaml

from pcr.config import ConfigError, Params, calibration_prompts, eval_prompt_sets, load_params, read_prompts


def test_repo_params_yaml_is_valid():
    p = load_params("params.yaml")
    assert p.calibrate.mode == "progressive"


@pytest.mark.parametrize("data,msg", [
    ({"quant": {"act_bitz": 8}}, r"quant.act_bitz is not a known key: allowed keys of quant are \["),
    ({"quant": {"act_bits": "8"}}, r"quant.act_bits='8' is not allowed: expected int, got str"),
    ({"quant": {"weight_bits": 0}}, r"quant.weight_bits=0 is not allowed: bits must be an integer from 2 to 16"),
    ({"quant": {"act_bits": True}}, r"quant.act_bits=True is not allowed: expected int"),
    ({"quant": {"include": "*"}}, r"quant.include='\*' is not allowed: expected a list of str"),
    ({"calibrate": {"mode": "greedy"}}, r"calibrate.mode='greedy' is not allowed: choose one of \['fp32', 'progressive', 'shared'\]"),
    ({"calibrate": {"store": {"layerz": []}}}, r"calibrate.store.layerz is not a known key"),
    ({"relax": {"fraction": 2}}, r"relax.fraction=2.0 is not allowed"),
    ({"model": {"scheduler": "ddpm"}}, r"model.scheduler='ddpm' is not allowed: choose one of \['ddim', 'dpm\+\+', 'euler', 'pndm'\]"),
    ({"model": {"dtype": "int8"}}, r"model.dtype='int8' is not allowed"),
    ({"generate": {"kernels": "int8"}}, r"generate.kernels='int8' is not allowed: choose one of \['fake', 'fp8', 'int', 'openvino'\]"),
    ({"generate": {"openvino_precision": "fp16"}}, r"generate.openvino_precision='fp16' is not allowed: choose one of \['auto', 'bf16', 'f32'\]"),
    ({"quant": {"format": "fp16"}}, r"quant.format='fp16' is not allowed: choose one of \['fp8', 'int'\]"),
    ({"quant": {"format": "fp8", "act_bits": 6}}, r"quant.act_bits=6 is not allowed with quant.format=fp8"),
    ({"quant": {"format": "fp8", "weight_method": "adaround"}}, r"weight_method='adaround' is not allowed with quant.format=fp8"),
    ({"extra": {}}, r"params section 'extra' is unknown"),
    ({"calibrate": {"num_prompts": 8}}, r"calibrate.num_prompts is no longer a key: .*see the same ones: set collect.num_prompts"),
    ({"quant": {"ema_constant": 0}}, r"quant.ema_constant=0.0 is not allowed: use a number in \(0, 1\]"),
    ({"quant": {"weight_method": "gptq"}}, r"quant.weight_method='gptq' is not allowed: choose one of \['adaround', 'rtn'\]"),
    ({"quant": {"recon": {"granularity": "model"}}}, r"quant.recon.granularity='model' is not allowed: choose one of \['block', 'layer'\]"),
    ({"quant": {"recon": {"iterations": 0}}}, r"quant.recon.iterations=0 is not allowed: it must be positive"),
    ({"quant": {"recon": {"b_start": 2, "b_end": 20}}}, r"quant.recon.b_start=2.0, b_end=20.0 are not allowed"),
    ({"quant": {"recon": {"warmup": 1}}}, r"quant.recon.warmup=1.0 is not allowed: use a number in \[0, 1\)"),
    ({"quant": {"recon": {"itrations": 5}}}, r"quant.recon.itrations is not a known key"),
])
def test_bad_params_name_key_value_and_allowed(data, msg):
    with pytest.raises(ConfigError, match=msg):
        Params.from_dict(data)


@pytest.mark.parametrize("data,msg", [
    ({"quant": {"keep_float": ["conv_in"]}},
     r"calibrate.objective='affine' corrects the UNet's output in its float conv_out, which quant.\* quantizes: add conv_out"),
    ({"calibrate": {"objective": "bias"}, "quant": {"keep_float": [], "include": ["conv_*"]}}, r"objective='bias' corrects"),
])
def test_an_output_correction_of_a_quantized_output_layer_is_refused(data, msg):
    with pytest.raises(ConfigError, match=msg):
        Params.from_dict(data).check_combinations()


def test_a_quantized_output_layer_is_fine_with_the_ranges_objective_or_excluded():
    Params.from_dict({"quant": {"keep_float": ["conv_in"]}, "calibrate": {"objective": "ranges"}}).check_combinations()
    Params.from_dict({"quant": {"keep_float": [], "exclude": ["conv_out"]}}).check_combinations()
    Params.from_dict({"quant": {"keep_float": [], "include": ["down_blocks.*"]}}).check_combinations()


def test_ints_are_accepted_as_floats_and_lists_become_tuples():
    p = Params.from_dict({"model": {"guidance_scale": 7}, "quant": {"exclude": ["a.*"]}})
    assert p.model.guidance_scale == 7.0 and p.quant.exclude == ("a.*",)


def test_prompts_file_missing_or_empty(tmp_path):
    with pytest.raises(ConfigError, match=r"collect.prompts='.*nope.txt': the prompts file does not exist"):
        read_prompts(tmp_path / "nope.txt", key="collect.prompts")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="the prompts file is empty"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "p.txt").write_text(" a \n\nb\nc\n")
    assert read_prompts(tmp_path / "p.txt", limit=2) == ["a", "b"]


def test_prompts_file_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("a caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"eval.prompts='.*latin1.txt': the prompts file is not UTF-8 text \(byte offset 5: b'\\xe9'\)"):
        read_prompts(tmp_path / "latin1.txt", key="eval.prompts")


def test_null_paraphrase_set_is_left_out(tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    d = {"eval": {"prompts": str(tmp_path / "p.txt"), "paraphrase_prompts": None, "num_prompts": 2},
         "collect": {"prompts": str(tmp_path / "p.txt"), "num_prompts": 1}}
    assert eval_prompt_sets(Params.from_dict(d)) == {"standard": ["a", "b"]}
    assert calibration_prompts(Params.from_dict(d)) == ["a"]
    d["eval"]["paraphrase_prompts"] = str(tmp_path / "p.txt")
    assert eval_prompt_sets(Params.from_dict(d)) == {"standard": ["a", "b"], "paraphrase": ["a", "b"]}


def test_images_per_prompt_repeats_each_prompt_in_a_row(tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    d = {"eval": {"prompts": str(tmp_path / "p.txt"), "paraphrase_prompts": None, "num_prompts": 2, "images_per_prompt": 3}}
    assert eval_prompt_sets(Params.from_dict(d)) == {"standard": ["a", "a", "a", "b", "b", "b"]}
    d["eval"]["images_per_prompt"] = 0
    with pytest.raises(ConfigError, match="eval.images_per_prompt=0"):
        Params.from_dict(d)


def test_load_params_file(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"relax": {"fraction": 0.2, "where": "xT"}}))
    assert load_params(tmp_path / "p.yaml").relax.where == "xT"
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "missing.yaml")


def test_config_knows_the_registries_names_without_importing_them():
    from pcr.config import OBSERVER_NAMES, SCHEDULER_NAMES
    from pcr.models.schedulers import SCHEDULERS
    from pcr.quant.observers import OBSERVERS

    assert set(OBSERVER_NAMES) == set(OBSERVERS)
    assert set(SCHEDULER_NAMES) == set(SCHEDULERS)


def test_config_relax_and_env_import_no_torch():
    import subprocess
    import sys

    code = "import sys, pcr.config, pcr.relax, pcr.stage, pcr.env; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
