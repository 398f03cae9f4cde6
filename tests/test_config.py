"""Config: YAML mirrors the dataclasses, flags override, bad keys/values fail by name."""

from pathlib import Path

import pytest
import yaml

from transfergen.config import RunConfig, build_config, parse_overrides, to_dict
from transfergen.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_mirrors_dataclasses():
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert data == to_dict(RunConfig())


def test_every_shipped_config_loads():
    for path in (ROOT / "configs").glob("*.yaml"):
        build_config(RunConfig, [str(path)])


def test_overrides_types_and_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.01\n  max_steps: 5\nmodel:\n  preset: tiny\n")
    cfg = build_config(RunConfig, [str(f)], parse_overrides(
        ["--train.lr=3e-4", "--train.grad_clip", "null", "--data.corpus=a.txt", "--resume"]))
    assert cfg.train.lr == pytest.approx(3e-4)  # flag beats file; "3e-4" is a number
    assert cfg.train.max_steps == 5 and cfg.model.preset == "tiny"
    assert cfg.train.grad_clip is None
    assert cfg.data.corpus == ["a.txt"] and cfg.resume is True


@pytest.mark.parametrize("flags, needle", [
    (["--train.lrr=1"], "unknown config key 'train.lrr'"),
    (["--bogus.x=1"], "unknown config key 'bogus'"),
    (["--train.max_steps=ten"], "config key 'train.max_steps': expected a number"),
    (["--train.max_steps=1.5"], "config key 'train.max_steps': expected an integer"),
    (["--tokenizer.jieba=3"], "config key 'tokenizer.jieba': expected true/false"),
])
def test_bad_keys_and_values_name_the_key(flags, needle):
    with pytest.raises(ConfigError) as err:
        build_config(RunConfig, [], parse_overrides(flags))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  lr: 1\n  x: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        build_config(RunConfig, [str(f)])
    msg = str(err.value)
    assert msg.startswith(f"{f}:") and msg.split(":")[1].isdigit()  # FILE:LINE: problem


# ---------------------------------------------------------------------------
# configuration that cannot silently do nothing


def _task_file(tmp_path: Path) -> Path:
    (tmp_path / "pairs.jsonl").write_text('{"source": "a", "target": "b"}\n' * 20)
    task = tmp_path / "task.yaml"
    task.write_text(f"reader: jsonl\npath: {tmp_path / 'pairs.jsonl'}\nval_size: 2\ntest_size: 2\n"
                    "max_source_tokens: 40\n")
    return task


def _finetune(argv: list[str]):
    from transfergen.cli import build_parser, finetune_config

    args, rest = build_parser().parse_known_args(["finetune", *argv])
    return finetune_config(args, rest)


def test_task_flag_merges_only_the_keys_the_task_file_sets(tmp_path):
    task = _task_file(tmp_path)
    conf = tmp_path / "c.yaml"
    conf.write_text("task:\n  max_target_tokens: 32\n  max_source_tokens: 99\n  prompt: 'Q: {source}'\n")
    cfg = _finetune(["--init", "scratch", "--task", str(task), "--config", str(conf), "--out", str(tmp_path / "o")])
    assert cfg.task.max_target_tokens == 32 and cfg.task.prompt == "Q: {source}"  # kept from --config
    assert cfg.task.max_source_tokens == 40 and cfg.task.name == "task"  # written in the task file
    cfg = _finetune(["--init", "scratch", "--task", str(task), "--config", str(conf), "--task.max_target_tokens=9"])
    assert cfg.task.max_target_tokens == 9  # flags still win


def test_option_of_an_unselected_strategy_fails_in_one_line(tmp_path, capsys):
    from transfergen.cli import main

    task = _task_file(tmp_path)
    argv = ["finetune", "--init", "scratch", "--task", str(task), "--out", str(tmp_path / "o")]
    assert main([*argv, "--strategy", "full", "--strategy.lr_decay=0.7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["transfergen: error: config key 'strategy.lr_decay' is an option of strategy "
                   "'discriminative', which strategy.name 'full' does not select"]
    assert not (tmp_path / "o").exists()  # nothing ran
    cfg = _finetune([*argv[1:], "--strategy", "freeze+discriminative", "--strategy.lr_decay=0.7"])
    assert cfg.strategy.lr_decay == 0.7
    with pytest.raises(ConfigError, match=r"'strategy\.lora_rank' is an option of strategy 'lora'"):
        build_config(RunConfig, [], {"strategy": {"name": "freeze", "lora_rank": 4}})
    build_config(RunConfig, [str(ROOT / "configs" / "default.yaml")])  # defaults select nothing extra


def test_every_strategy_option_belongs_to_a_registered_strategy():
    import dataclasses

    from transfergen.config import StrategyConfig
    from transfergen.strategies import STRATEGIES

    owners = {f.name: f.metadata.get("strategy") for f in dataclasses.fields(StrategyConfig)}
    assert owners.pop("name") is None and set(owners.values()) <= set(STRATEGIES)
    assert set(STRATEGIES) - set(owners.values()) == {"full"}  # the one entry without options


def test_pretrain_refuses_sections_it_does_not_use(tmp_path, capsys):
    from transfergen.cli import main

    assert main(["pretrain", "--corpus", "c.txt", "--out", str(tmp_path / "o"), "--strategy.name=lora"]) == 2
    assert capsys.readouterr().err.strip() == ("transfergen: error: config key 'strategy.name' is set, but "
                                               "pretrain does not use strategy")


def test_help_lists_every_key_with_default_and_help(capsys):
    import dataclasses

    from transfergen.cli import main

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type) or f.name in ("model", "tokenizer", "data", "train", "task",
                                                                "strategy", "vocab", "eval"):
                yield from keys(getattr(RunConfig(), f.name).__class__, f"{prefix}{f.name}.")
            else:
                assert f.metadata.get("help"), f"{prefix}{f.name} has no help text"
                yield f"{prefix}{f.name}"

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    assert "--train.lr=0.001" in text and "peak learning rate" in text and "--strategy." not in text
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    for key in keys(RunConfig):
        assert f"--{key}=" in text, key
    assert "--strategy.lr_decay=0.8" in text and "[discriminative]" in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("transfergen 0.")
