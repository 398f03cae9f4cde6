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
