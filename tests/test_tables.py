"""Tasks and corpora from CSV, Parquet, Arrow and `datasets` folders, built here with the real
libraries; each format fine-tunes through `transfergen finetune`; bad input names the file."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

from transfergen.cli import main
from transfergen.config import TaskConfig
from transfergen.data.readers import iter_documents
from transfergen.data.tasks import load_task
from transfergen.errors import UserError

from conftest import OBJECTS, SUBJECTS, VERBS

pa = pytest.importorskip("pyarrow", reason="the data extra (pyarrow) is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="the data extra (pyarrow) is not installed")
datasets = pytest.importorskip("datasets", reason="the data extra (datasets) is not installed")


def rows(n: int, seed: int = 1) -> list[dict]:
    """subject -> 'verb object.' pairs (the pretraining templates), each with two references."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
        out.append({"src": s.capitalize(), "tgt": f"{v} {o}.", "refs": [f"{v} {o}.", f"{v} {o} again."]})
    return out


def write(fmt: str, path: Path, data: list[dict]) -> Path:
    """`data` as a CSV / Parquet / Arrow file or a save_to_disk folder at `path`."""
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["src", "tgt", "refs"])
            w.writerows([r["src"], r["tgt"], json.dumps(r["refs"])] for r in data)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(data), path, row_group_size=7)  # several row groups
    elif fmt == "arrow":
        with pa.ipc.new_file(str(path), pa.Table.from_pylist(data).schema) as w:
            w.write_table(pa.Table.from_pylist(data), max_chunksize=7)
    else:
        datasets.Dataset.from_list(data).save_to_disk(str(path))
    return path


def task(fmt: str, path: Path, **kw) -> TaskConfig:
    keys = {"source_field": "src", "target_field": "tgt", "references_field": "refs", "val_size": 5, "test_size": 5}
    return TaskConfig(reader=fmt, path=str(path), **{**keys, **kw})


@pytest.mark.parametrize("fmt,name", [("csv", "d.csv"), ("parquet", "d.parquet"), ("arrow", "d.arrow"),
                                      ("hf", "d")])
def test_each_format_reads_columns_and_references(fmt, name, tmp_path):
    data = rows(40)
    t = load_task(task(fmt, write(fmt, tmp_path / name, data)))
    assert len(t.train) == 30 and len(t.val) == 5 and len(t.test) == 5
    got = sorted((ex.source, ex.target, tuple(ex.references)) for ex in t.train + t.val + t.test)
    want = sorted((r["src"], r["tgt"], tuple(r["refs"])) for r in data)
    assert got == want


def test_dataset_dict_splits_come_from_the_data(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows(20, 1)),
                               "validation": datasets.Dataset.from_list(rows(6, 2)),
                               "test": datasets.Dataset.from_list(rows(4, 3))})
    dd.save_to_disk(str(tmp_path / "dd"))
    t = load_task(task("hf", tmp_path / "dd"))
    assert (len(t.train), len(t.val), len(t.test)) == (20, 6, 4)  # not the seeded 5 / 5
    assert [ex.source for ex in t.val] == [r["src"] for r in rows(6, 2)]
    # Without a test split, test is held out of train by the seeded split.
    datasets.DatasetDict({"train": dd["train"], "dev": dd["validation"]}).save_to_disk(str(tmp_path / "dd2"))
    t2 = load_task(task("hf", tmp_path / "dd2"))
    assert (len(t2.train), len(t2.val), len(t2.test)) == (15, 6, 5)


def test_split_placeholder_and_parquet_shards(tmp_path):
    for split, n in (("train", 12), ("val", 3), ("test", 4)):
        data = rows(n, seed=n)
        write("parquet", tmp_path / f"{split}-00000.parquet", data[: n // 2])
        write("parquet", tmp_path / f"{split}-00001.parquet", data[n // 2:])
    t = load_task(task("parquet", tmp_path / "{split}-*.parquet"))
    assert (len(t.train), len(t.val), len(t.test)) == (12, 3, 4)
    assert [ex.source for ex in t.train] == [r["src"] for r in rows(12, 12)]  # shards in name order


def test_corpora_stream_from_every_format(tmp_path):
    docs = [{"text": f"document number {i}."} for i in range(3000)] + [{"text": None}, {"text": "  "}]
    paths = [str(write(fmt, tmp_path / name, docs)) for fmt, name in
             (("parquet", "c.parquet"), ("arrow", "c.arrow"), ("hf", "c"))]
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "text"], *([i, d["text"] or ""] for i, d in enumerate(docs))])
    stream = iter_documents([*paths, str(tmp_path / "c.csv")])
    first = next(stream)  # a generator: nothing is read before it is asked for
    assert first == "document number 0."
    rest = list(stream)
    assert len(rest) == 4 * 3000 - 1 and rest[-1] == "document number 2999."


def test_pretrain_reads_a_datasets_folder(tmp_path, one_thread):
    from conftest import make_corpus, tiny_config
    from transfergen.pretrain import run_pretrain

    lines = make_corpus(tmp_path / "c.txt").read_text(encoding="utf-8").splitlines()
    datasets.Dataset.from_dict({"body": lines}).save_to_disk(str(tmp_path / "corpus"))
    cfg = tiny_config(tmp_path / "corpus", tmp_path / "run", data={"text_field": "body"}, train={"max_steps": 3})
    run_pretrain(cfg)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_dataset_dict_corpus_reads_train(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": ["a b c", "d e f"]}),
                               "test": datasets.Dataset.from_dict({"body": ["held out"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert list(iter_documents([str(tmp_path / "dd")], text_field="body")) == ["a b c", "d e f"]


def test_bad_input_names_the_file(tmp_path):
    good = rows(20)
    pq.write_table(pa.Table.from_pylist(good), tmp_path / "d.parquet")
    with pytest.raises(UserError, match=r"d\.parquet: no column 'source' \(task\.source_field\); the columns are: "
                                        r"src, tgt, refs"):
        load_task(TaskConfig(reader="parquet", path=str(tmp_path / "d.parquet")))
    pq.write_table(pa.Table.from_pylist([{"src": i, "tgt": "x"} for i in range(20)]), tmp_path / "int.parquet")
    with pytest.raises(UserError, match=r"int\.parquet: column 'src' \(task\.source_field\) holds int64, "
                                        r"expected strings"):
        load_task(task("parquet", tmp_path / "int.parquet", references_field="references"))
    pq.write_table(pa.Table.from_pylist([{"src": "a", "tgt": "b" if i != 9 else None} for i in range(20)]),
                   tmp_path / "null.parquet")
    with pytest.raises(UserError, match=r"null\.parquet: row 10: column 'tgt' is null"):
        load_task(task("parquet", tmp_path / "null.parquet", references_field="references"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(good),
                          "test": datasets.Dataset.from_list(good).select([])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UserError, match=r"dd/test: split 'test' is empty"):
        load_task(task("hf", tmp_path / "dd"))
    (tmp_path / "e.csv").write_text("src,tgt\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"e\.csv: no rows"):
        load_task(task("csv", tmp_path / "e.csv", references_field="references"))
    with pytest.raises(UserError, match=r"not_there: not a folder saved with datasets' save_to_disk"):
        load_task(task("hf", tmp_path / "not_there"))


def test_csv_errors_and_field_keys_need_a_column_reader(tmp_path):
    (tmp_path / "bad.csv").write_bytes(b"src,tgt\nok,fine\nbad,\xff\n")
    with pytest.raises(UserError, match=r"bad\.csv: not valid UTF-8 \(byte 0xff\)"):
        load_task(task("csv", tmp_path / "bad.csv", references_field="references"))
    (tmp_path / "ragged.csv").write_text("src,tgt\na,b\nc\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"ragged\.csv:3: row 2 has 1 fields, the header 2"):
        load_task(task("csv", tmp_path / "ragged.csv", references_field="references"))
    with pytest.raises(UserError, match=r"task\.source_field is set, but reader 'tsv' has no named columns"):
        load_task(TaskConfig(reader="tsv", path=str(tmp_path / "x.tsv"), source_field="src"))


def test_missing_extra_gives_the_install_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    pq_file = tmp_path / "d.parquet"
    pq_file.write_bytes(b"PAR1")
    with pytest.raises(UserError, match=r"d\.parquet: reading parquet data needs the 'pyarrow.parquet' package: "
                                        r"pip install 'transfergen\[data\]'"):
        load_task(task("parquet", pq_file))
    assert main(["pretrain", "--corpus", str(pq_file), "--out", str(tmp_path / "r")]) == 2
    assert "pip install 'transfergen[data]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # said before any work


@pytest.mark.parametrize("fmt,name", [("csv", "d.csv"), ("parquet", "d.parquet"), ("hf", "d")])
def test_each_format_finetunes_through_the_cli(fmt, name, tiny_pretrained, tmp_path, capsys):
    path = write(fmt, tmp_path / name, rows(60))
    (tmp_path / "task.yaml").write_text(
        f"reader: {fmt}\npath: {path}\nsource_field: src\ntarget_field: tgt\nreferences_field: refs\n"
        "val_size: 8\ntest_size: 8\nmax_source_tokens: 16\nmax_target_tokens: 16\n", encoding="utf-8")
    out = tmp_path / "ft"
    assert main(["finetune", "--init", str(tiny_pretrained), "--task", str(tmp_path / "task.yaml"),
                 "--out", str(out), "--train.max_steps=4", "--train.batch_size=4", "--train.eval_every=4",
                 "--train.eval_batches=1", "--train.threads=1", "--train.warmup_steps=1"]) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train_examples"] == 44 and records[0]["val_examples"] == 8
    assert any(r.get("step") == 4 and "val_loss" in r for r in records)
    assert (out / "model.safetensors").is_file()


def test_bad_column_stops_finetune_with_one_line(tiny_pretrained, tmp_path, capsys):
    path = write("parquet", tmp_path / "d.parquet", rows(30))
    (tmp_path / "task.yaml").write_text(f"reader: parquet\npath: {path}\nsource_field: text\n", encoding="utf-8")
    assert main(["finetune", "--init", str(tiny_pretrained), "--task", str(tmp_path / "task.yaml"),
                 "--out", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert err == (f"transfergen: error: {path}: no column 'text' (task.source_field); "
                   "the columns are: src, tgt, refs\n")
    assert not (tmp_path / "ft" / "checkpoints").exists()  # stopped before any training
