"""Task readers (jsonl / tsv / parallel), error locations, seeded splits, task YAMLs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from transfergen.config import TaskConfig
from transfergen.data.tasks import (READERS, Example, TaskData, load_task, load_task_file,
                                    register_reader, split_examples)
from transfergen.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[1]


def task(path, reader="jsonl", **kw) -> TaskConfig:
    return TaskConfig(name="t", reader=reader, path=str(path), **{"val_size": 2, "test_size": 3, **kw})


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(n: int, tag: str = "") -> list[dict]:
    return [{"source": f"src {tag}{i}", "target": f"tgt {tag}{i}"} for i in range(n)]


def test_example_references_default_and_include_target():
    assert Example("a", "b").references == ["b"]
    assert Example("a", "b", ["c"]).references == ["b", "c"]
    assert Example("a", "b", ["c", "b"]).references == ["c", "b"]


def test_jsonl_single_file_is_split(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [*rows(20), {"source": "x", "target": "y", "references": ["z"]}])
    data = load_task(task(p))
    assert (len(data.train), len(data.val), len(data.test)) == (16, 2, 3)
    everything = data.train + data.val + data.test
    assert sorted(e.source for e in everything) == sorted([f"src {i}" for i in range(20)] + ["x"])
    assert next(e for e in everything if e.source == "x").references == ["y", "z"]


def test_split_is_seeded_deterministic_and_disjoint():
    exs = [Example(f"s{i}", f"t{i}") for i in range(100)]
    a = split_examples(exs, 10, 5, seed=1)
    assert a == split_examples(exs, 10, 5, seed=1)
    assert a != split_examples(exs, 10, 5, seed=2)
    ids = [{e.source for e in part} for part in a]
    assert [len(s) for s in ids] == [85, 5, 10] and set.union(*ids) == {e.source for e in exs}
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    with pytest.raises(UserError, match="has 15 examples, too few"):
        split_examples(exs[:15], 10, 5, seed=1)


def test_jsonl_split_placeholder_and_renamed_split(tmp_path):
    for split, n in (("train", 7), ("dev", 2), ("test", 3)):
        write_jsonl(tmp_path / f"{split}.jsonl", rows(n, split))
    cfg = task(tmp_path / "{split}.jsonl", options={"splits": {"val": "dev"}})
    data = load_task(cfg)
    assert [e.source for e in data.val] == ["src dev0", "src dev1"]
    assert len(data.train) == 7 and data.test[2].target == "tgt test2"


def test_tsv_with_extra_references(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("".join(f"s{i}\tt{i}\tr{i}\n" for i in range(10)) + "\n", encoding="utf-8")
    data = load_task(task(p, "tsv"))
    ex = (data.train + data.val + data.test)[0]
    assert len(data.train) == 5 and ex.references == [ex.target, "r" + ex.target[1:]]


@pytest.mark.parametrize("gz", [False, True])
def test_parallel_plain_and_gz_with_split_placeholder(tmp_path, gz):
    def put(name: str, lines: list[str]) -> None:
        text = "".join(x + "\n" for x in lines).encode("utf-8")
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(text) if gz else text)
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        put(f"{split}.en", [f"{split} hello {i}" for i in range(n)])
        put(f"{split}.de", [f"{split} hallo {i}" for i in range(n)])
    data = load_task(task(tmp_path / "{split}", "parallel", options={"src": "en", "tgt": "de"}))
    assert data.train[5] == Example("train hello 5", "train hallo 5")
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)


def test_reader_may_leave_val_empty(tmp_path):
    @register_reader("_test_no_val")
    def _reader(cfg):
        return TaskData([Example(f"s{i}", f"t{i}") for i in range(10)], [], [Example("a", "b")])
    try:
        data = load_task(task(tmp_path, "_test_no_val"))
        assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 1)
    finally:
        del READERS["_test_no_val"]


def expect_error(cfg: TaskConfig, where: str, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        load_task(cfg)
    assert str(info.value).startswith(where), str(info.value)


def test_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    cases = [('{"source": "a", "target": "b"}\n{"source": "a"\n', "invalid JSON"),
             ('{"source": "a", "target": "b"}\n\n{"source": "a"}\n', "missing field 'target'"),
             ('{"source": "a", "target": "b"}\n{"source": "a", "target": " "}\n', "empty target"),
             ('{"source": "a", "target": "b"}\n["a", "b"]\n', "expected a JSON object"),
             ('{"source": "a", "target": "b"}\n{"source": "a", "target": "b", "references": "c"}\n',
              "'references' must be a list")]
    for text, match in cases:
        p.write_text(text, encoding="utf-8")
        line = text.rstrip("\n").count("\n") + 1
        expect_error(task(p), f"{p}:{line}: ", match)


def test_undecodable_and_missing_files(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_bytes(b"a\tb\nc\t\xff\n")
    expect_error(task(p, "tsv"), f"{p}:2: ", "not valid UTF-8")
    p.write_text("a\tb\nno tab here\n", encoding="utf-8")
    expect_error(task(p, "tsv"), f"{p}:2: ", "no tab")
    p.write_text("a\tb\nc\t\n", encoding="utf-8")
    expect_error(task(p, "tsv"), f"{p}:2: ", "empty target")
    expect_error(task(tmp_path / "nope.jsonl"), f"{tmp_path / 'nope.jsonl'}: ", "file not found")
    missing_split = tmp_path / "{split}.jsonl"
    write_jsonl(tmp_path / "train.jsonl", rows(3))
    expect_error(task(missing_split), f"{tmp_path / 'val.jsonl'}: ", "file not found")


def test_parallel_errors(tmp_path):
    (tmp_path / "train.src").write_text("".join(f"s{i}\n" for i in range(10)), encoding="utf-8")
    (tmp_path / "train.tgt").write_text("".join(f"t{i}\n" for i in range(9)), encoding="utf-8")
    cfg = task(tmp_path / "train", "parallel")
    expect_error(cfg, f"{tmp_path / 'train.src'}:10: ", "train.src has 10 lines but train.tgt has 9")
    (tmp_path / "train.tgt").write_text("".join(f"t{i}\n" for i in range(11)), encoding="utf-8")
    expect_error(cfg, f"{tmp_path / 'train.tgt'}:11: ", "train.tgt has 11 lines but train.src has 10")
    (tmp_path / "train.tgt").write_text("".join(f"t{i}\n" if i != 4 else "\n" for i in range(10)))
    expect_error(cfg, f"{tmp_path / 'train.tgt'}:5: ", "empty target")
    expect_error(task(tmp_path / "valid", "parallel"), f"{tmp_path / 'valid.src'}: ", "file not found")


def test_bad_task_configs(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", rows(20))
    for kw, match in [({"reader": "nope"}, "unknown task.reader 'nope'"),
                      ({"loss_on": "prompt"}, "loss_on must be one of"),
                      ({"prompt": "no placeholder"}, "must contain"),
                      ({"prompt": "{src}"}, "not a valid template"),
                      ({"max_target_tokens": 1}, "max_target_tokens")]:
        with pytest.raises(ConfigError, match=match):
            load_task(task(p, **kw))


def test_load_task_file_validates_keys(tmp_path):
    y = tmp_path / "mytask.yaml"
    y.write_text("reader: tsv\npath: data.tsv\nmetrics: [bleu, chrf]\n", encoding="utf-8")
    cfg = load_task_file(y)
    assert cfg.name == "mytask" and cfg.metrics == ["bleu", "chrf"] and cfg.reader == "tsv"
    y.write_text("task:\n  reader: tsv\n  path: data.tsv\n", encoding="utf-8")
    assert load_task_file(y).path == "data.tsv"
    y.write_text("reader: tsv\npath: d.tsv\nsource_langg: en\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{y}: unknown config key 'task.source_langg'"):
        load_task_file(y)
    y.write_text("reader: tsv\npath: d.tsv\nval_size: many\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"task\.val_size"):
        load_task_file(y)


TASK_FILES = sorted((ROOT / "configs" / "tasks").glob("*.yaml"))


def test_all_real_task_files_exist():
    names = {p.stem for p in TASK_FILES}
    assert {"tatoeba_zh_en", "multi30k_en_de", "multi30k_captions", "tangshi_title", "songci",
            "news_headlines"} <= names


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_task_file_loads(path):
    cfg = load_task_file(path)
    assert cfg.name == path.stem and cfg.reader in READERS and cfg.metrics
    assert "{source}" in cfg.prompt
