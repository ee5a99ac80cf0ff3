from pathlib import Path

import pytest

from pathvqa.config import ExperimentConfig, load_config, parse_overrides
from pathvqa.errors import ConfigError
from tests.conftest import run_cli

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert {"blip_tiny", "blip_zeroshot", "blip_lora", "vlm_tiny"} <= names
    assert {"biomedclip_mistral_caption", "biomedclip_mistral_vqa"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_validates_without_building_a_model(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig) and cfg.name == path.stem
    for stage in cfg.stages:
        cfg.stage_config(stage)


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        CONFIGS[0], ["train.lr=3e-4", "train.max_steps=7", "data.dataset=/tmp/x", "train.augment.hflip=false"]
    )
    assert cfg.train.lr == 3e-4 and cfg.train.max_steps == 7 and cfg.data.dataset == "/tmp/x"
    assert cfg.train.augment.hflip is False
    nested, problems = parse_overrides(["a.b=1", "novalue"])
    assert nested == {"a": {"b": 1}} and problems == ["override 'novalue': expected key=value"]


def test_a_mapping_given_whole_replaces_one_entry_given_alone_merges():
    grpo = "configs/vlm_tiny_grpo.yaml"  # rewards: {closed_exact_match: 1.0, open_exact_match: 1.0}
    whole = load_config(grpo, ["train.grpo.rewards={closed_correct: 2}"]).train.grpo.rewards
    assert whole == {"closed_correct": 2}
    merged = load_config(grpo, ["train.grpo.rewards.open_token_f1=0.5"]).train.grpo.rewards
    assert merged == {"closed_exact_match": 1.0, "open_exact_match": 1.0, "open_token_f1": 0.5}
    both = ["train.grpo.rewards={closed_correct: 1}", "train.grpo.rewards.open_token_f1=1"]
    assert load_config(grpo, both).train.grpo.rewards == {"closed_correct": 1, "open_token_f1": 1}
    augment = load_config(grpo, ["train.augment.hflip=true"]).train.augment  # sections still merge
    assert augment.hflip is True and augment.vflip is False


def test_all_errors_are_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(
            Path("configs/blip_tiny.yaml"),
            ["train.lr=abc", "train.bogus=1", "model.tuning=partial", "train.batch_size=0"],
        )
    problems = err.value.problems
    assert len(problems) == 4
    joined = " | ".join(problems)
    for part in ("train.lr", "train.bogus: unknown key", "model.tuning", "train.batch_size"):
        assert part in joined


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"model\.vision and model\.language are required"):
        load_config(None, ["model.family=vlm"])
    with pytest.raises(ConfigError, match="4bit"):
        load_config(None, ["model.quantization=4bit", "model.tuning=full"])


def test_train_cli_reports_config_errors_before_loading_anything(tmp_path):
    proc = run_cli(
        "train",
        "configs/blip_tiny.yaml",
        "--out",
        tmp_path / "run",
        "--set",
        "train.lr=abc",
        "--set",
        "train.epochs=-1",
        "--set",
        "nope=1",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert (
        line.count("\n") == 0
        and "train.lr" in line
        and "train.epochs" in line
        and "nope: unknown key" in line
    )
    assert not (tmp_path / "run").exists()
    proc = run_cli("train", tmp_path / "missing.yaml", "--out", tmp_path / "run", check=False)
    assert proc.returncode == 2 and "file not found" in proc.stderr


ACCELERATE = sorted((Path(__file__).parent.parent / "configs" / "accelerate").glob("*.yaml"))


def test_accelerate_configs_load_with_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    assert {p.stem for p in ACCELERATE} == {"ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"}
    kinds = {p.stem: load_config_from_file(str(p)) for p in ACCELERATE}
    assert kinds["ddp"].distributed_type == "MULTI_GPU" and kinds["fsdp"].distributed_type == "FSDP"
    assert [kinds[f"deepspeed_zero{z}"].deepspeed_config["zero_stage"] for z in (2, 3)] == [2, 3]


def test_best_metric_must_name_a_metric():
    with pytest.raises(ConfigError, match=r"train\.best_metric: not a metric"):
        load_config("configs/blip_tiny.yaml", ["train.best_metric=accuracy"])
    assert load_config("configs/blip_tiny.yaml", ["train.best_metric=meteor"]).train.best_metric == "meteor"


def test_a_key_another_family_reads_is_an_error_not_silence():
    with pytest.raises(ConfigError) as err:
        load_config("configs/blip_tiny.yaml", ["model.quantization=4bit", "model.vision=tiny-clip"])
    assert err.value.problems == [
        "model.quantization: not a setting of model.family 'blip' (got '4bit')",
        "model.vision: not a setting of model.family 'blip' (got 'tiny-clip')",
    ]
    with pytest.raises(ConfigError, match=r"model\.family: 'llava' is not a model family"):
        load_config(None, ["model.family=llava"])


@pytest.mark.slow
def test_configs_ship_with_the_package_and_load_from_any_directory(tmp_path, synth_dir):
    import contextlib

    from pathvqa.config import PACKAGED

    assert {p.name for p in PACKAGED.glob("*.yaml")} == {p.name for p in CONFIGS}
    args = ["train", "configs/blip_tiny.yaml", "--out", "run", "--set", f"data.dataset={synth_dir}"]
    args += ["--set", "train.max_steps=1", "--set", "data.eval_samples=4", "--set", "model.image_size=32"]
    with contextlib.chdir(tmp_path):  # a folder with no configs/ in it: the packaged copy is read
        proc = run_cli(*args, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step-1").is_dir()
