from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wildfire_kd.config import Config, load_config, parse_override, valid_keys
from wildfire_kd.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def test_documented_config_states_exactly_the_defaults():
    path = REPO / "configs" / "student_model_cfg.yaml"
    assert load_config(path).model_dump() == Config().model_dump()
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("  ")]
    documented = {ln.split(":")[0].strip() for ln in lines}
    nested_sections = {k.split(".")[1] for k in valid_keys() if k.count(".") == 2}  # parity.fp16.box_atol: fp16
    assert documented == {k.split(".")[-1] for k in valid_keys()} | nested_sections
    assert all("  # (" in ln for ln in lines), "every key line carries '# (type) meaning'"


def test_parity_tolerances_are_one_model_per_variant_and_the_old_keys_still_work(caplog):
    config = load_config(None, ["parity.fp16.det_iou=0.5"])
    assert config.parity.for_variant("fp16").det_iou == 0.5
    assert config.parity.for_variant("fp16").box_atol == 8.0, "setting one key keeps the variant's other defaults"
    assert (
        config.parity.for_variant("int8").box_atol is None and config.parity.for_variant("int8").max_map50_drop == 0.05
    )
    old = load_config(None, ["parity.fp16_box_atol=3", "parity.score_atol=1e-6", "parity.int8_max_map50_drop=0.1"])
    assert (old.parity.fp16.box_atol, old.parity.fp32.score_atol, old.parity.int8.max_map50_drop) == (3.0, 1e-6, 0.1)
    assert old.parity.fp16.score_atol == 0.005
    assert "parity.fp16_box_atol is now parity.fp16.box_atol" in caplog.text
    with pytest.raises(InputError, match=r"unknown key 'parity.fp16.boxatol'; did you mean 'parity.fp16.box_atol'\?"):
        load_config(None, ["parity.fp16.boxatol=1"])
    assert config.parity.for_variant("bf16").box_atol == 8.0, "OpenVINO's bf16 has tolerances of its own"
    with pytest.raises(InputError, match="unknown model variant 'fp8'"):
        config.parity.for_variant("fp8")


def test_a_format_can_loosen_one_variants_tolerance_and_a_typo_there_fails_at_load():
    config = load_config(None, ["parity.formats={openvino: {int8: {max_map50_drop: 0.03}}}"])
    assert config.parity.for_variant("int8", "openvino").max_map50_drop == 0.03
    assert config.parity.for_variant("int8", "onnx").max_map50_drop == 0.05, "the other formats keep the variant's"
    assert config.parity.for_variant("int8", "openvino").box_min_score == config.parity.int8.box_min_score
    with pytest.raises(InputError, match=r"unknown model variant 'int9'"):
        load_config(None, ["parity.formats={openvino: {int9: {max_map50_drop: 0.03}}}"])
    with pytest.raises(InputError, match=r"parity.formats.ncnn.fp16"):
        load_config(None, ["parity.formats={ncnn: {fp16: {max_map_drop: 0.03}}}"])


def test_seed_training_settings():
    c = Config()
    t, d = c.train, c.distill
    assert (t.imgsz, t.lr0, t.batch, t.epochs, t.patience, t.optimizer, t.grad_clip) == (
        640,
        0.005,
        32,
        200,
        100,
        "SGD",
        10.0,
    )
    assert (d.lambda_distillation, d.lambda_detection, d.temperature) == (2.0, 1.0, 2.0)
    assert d.cls_weight == 1.0, "dense's class-term weight, chosen by the benchmark (BENCHMARKS.md)"
    assert d.model_copy(update={"method": "pseudo"}).cls_weight == 2.0  # the first spec's λ_dist_kl, for its method
    assert d.model_copy(update={"lambda_dist_kl": 0.5}).cls_weight == 0.5
    assert d.model_copy(update={"method": "pseudo"}).box_weight == 1.0  # the first spec's λ_dist_ciou, for its method


def test_overrides_then_flags_take_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr0: 0.1\n  epochs: 5\n")
    c = load_config(f, ["train.lr0=0.02", "distill.temperature=4", "train.freeze=[0, 1]"], train__epochs=7)
    assert (c.train.lr0, c.train.epochs, c.distill.temperature, c.train.freeze) == (0.02, 7, 4.0, [0, 1])


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    with pytest.raises(InputError, match=r"unknown key 'train\.lr00'.*did you mean 'train\.lr0'"):
        load_config(None, ["train.lr00=0.1"])
    f = tmp_path / "bad.yaml"
    f.write_text("distill:\n  temprature: 3\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*'distill\.temprature'.*did you mean 'distill\.temperature'"):
        load_config(f)


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(InputError, match=r"'train\.epochs': Input should be a valid integer.*'many'"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(InputError, match=r"'train\.imgsz'.*multiple of 32.*e\.g\. 96"):
        load_config(None, ["train.imgsz=100"])


def test_cross_field_check_names_the_keys():
    with pytest.raises(InputError, match="lambda_detection and distill.lambda_distillation are both 0"):
        load_config(None, ["distill.lambda_detection=0", "distill.lambda_distillation=0"])


def test_set_needs_section_and_value():
    assert parse_override("train.lr0=0.01") == (["train", "lr0"], 0.01)
    assert load_config(None, ["train.lr0=1e-3"]).train.lr0 == 0.001  # YAML 1.1 reads 1e-3 as text; float field
    with pytest.raises(InputError, match="expected section.key=value"):
        parse_override("train.lr0")
    with pytest.raises(InputError, match="needs its section; did you mean 'train.lr0' or 'finetune.lr0' or 'demo.lr0'"):
        parse_override("lr0=0.1")


def test_text_keys_keep_their_text():
    digest = "0" * 64
    c = load_config(None, [f"train.teacher_sha256={digest}", "train.device=0", "train.name=007"])
    assert (c.train.teacher_sha256, c.train.device, c.train.name) == (digest, "0", "007")
    assert load_config(None, ["train.teacher_sha256=null"]).train.teacher_sha256 is None
    assert load_config(None, ["train.epochs=007"]).train.epochs == 7  # numbers still parse


def test_missing_config_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_smoke_config_is_valid_and_tiny():
    c = load_config(REPO / "configs" / "smoke.yaml")
    assert c.train.device == "cpu" and c.train.epochs <= 2 and c.train.imgsz <= 96
    assert yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["train"]["ultralytics"] == {"nbs": 4}


def test_explicit_keys_record_what_the_user_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr0: 0.1\ndistill:\n  temperature: 3\n")
    c = load_config(f, ["train.epochs=3"], train__device="cpu", train__data=None)
    assert c.explicit_keys == {"train.lr0", "distill.temperature", "train.epochs", "train.device"}
