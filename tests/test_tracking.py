"""train.report_to: TensorBoard, W&B (offline) and MLflow (a local file store) receive what
metrics.jsonl records; a missing tracker is said once; an unknown one is refused."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from transfergen.cli import main
from transfergen.errors import ConfigError
from transfergen.io import read_metrics
from transfergen.pretrain import run_pretrain

from conftest import tiny_config

STEPS = {"max_steps": 6, "log_every": 1, "eval_every": 3, "save_every": 3}


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


def wandb_history(run: Path) -> list[dict]:
    """History rows of the run's offline .wandb file: a LevelDB-style log of protobuf records."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    data, block, rows, pending = path.read_bytes(), 32768, [], b""
    pos = 7  # ":W&B", a 2-byte magic and a version byte
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


@pytest.fixture
def trackers_env(tmp_path, monkeypatch) -> str:
    """W&B offline and MLflow on a local file store: no network, nothing outside tmp_path."""
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    uri = (tmp_path / "mlruns").as_uri()
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                       "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wbc"),
                       "MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true"}.items():
        monkeypatch.setenv(key, value)
    return uri


def test_each_tracker_receives_the_metrics(corpus, tmp_path, trackers_env, one_thread):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    run_pretrain(tiny_config(corpus, run, train={**STEPS, "report_to": ["tensorboard", "wandb", "mlflow"]}))
    want = losses(run)
    assert sorted(want) == [1, 2, 3, 4, 5, 6]

    tb = EventAccumulator(str(run / "tensorboard"))
    tb.Reload()
    assert {e.step: e.value for e in tb.Scalars("loss")} == pytest.approx(want)

    history = wandb_history(run)
    assert {int(r["step"]): r["loss"] for r in history if "loss" in r} == pytest.approx(want)
    assert any("val_loss" in r for r in history)

    ids = json.loads((run / "tracking.json").read_text())
    client = MlflowClient(trackers_env)
    assert {m.step: m.value for m in client.get_metric_history(ids["mlflow"], "loss")} == pytest.approx(want)
    mrun = client.get_run(ids["mlflow"])
    assert mrun.data.params["train.max_steps"] == "6" and mrun.info.status == "FINISHED"


def test_resume_continues_the_same_tracker_run(corpus, tmp_path, trackers_env, one_thread):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    run_pretrain(tiny_config(corpus, run, train={**STEPS, "max_steps": 3, "report_to": ["mlflow"]}))
    first = json.loads((run / "tracking.json").read_text())["mlflow"]
    run_pretrain(tiny_config(corpus, run, resume=True, train={**STEPS, "report_to": ["mlflow"]}))
    assert json.loads((run / "tracking.json").read_text())["mlflow"] == first
    steps = [m.step for m in MlflowClient(trackers_env).get_metric_history(first, "loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]


def test_a_missing_tracker_is_said_once_and_the_run_goes_on(corpus, tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the wandb extra were not installed
    run = tmp_path / "run"
    run_pretrain(tiny_config(corpus, run, train={**STEPS, "report_to": ["wandb"]}))
    err = capsys.readouterr().err
    assert err.count("train.report_to: wandb is not installed") == 1
    assert "pip install 'transfergen[wandb]'" in err
    assert sorted(losses(run)) == [1, 2, 3, 4, 5, 6] and not (run / "wandb").exists()


def test_no_tracker_by_default_and_unknown_ones_are_refused(corpus, tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    run_pretrain(tiny_config(corpus, run, train={**STEPS, "max_steps": 2}))
    assert not (run / "tensorboard").exists() and not (run / "tracking.json").exists()
    with pytest.raises(ConfigError, match=r"config key 'train\.report_to': every item must be one of "
                                          r"tensorboard, wandb, mlflow, got \['comet'\]"):
        tiny_config(corpus, run, train={"report_to": ["comet"]})
    assert main(["pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "x"),
                 "--train.report_to=[tensorboard, neptune]"]) == 2
    assert "config key 'train.report_to': every item must be one of" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before any work
