"""Experiment trackers behind `MetricsLog` (io.py): TensorBoard, Weights & Biases, MLflow.

`train.report_to` names the trackers (none by default); metrics.jsonl stays the record
and every tracker receives the same numbers, keyed by step. Each tracker is an optional
extra (`pip install 'transfergen[wandb]'`); one that is requested but not installed is
reported once, at start, and the run goes on with metrics.jsonl alone. They are set up
the way their own documentation says (environment variables included):

- `tensorboard`: event files in RUN/tensorboard/;
- `wandb`: project `$WANDB_PROJECT` (default transfergen), files under RUN/wandb/;
  `WANDB_MODE=offline` runs without a network;
- `mlflow`: `$MLFLOW_TRACKING_URI` (e.g. `file:///path/mlruns` for a local store),
  experiment `$MLFLOW_EXPERIMENT_NAME` (default transfergen).

W&B and MLflow get the resolved run config (RUN/run_config.yaml) as config / params, and a
resumed run continues the same tracker run (ids kept in RUN/tracking.json by `MetricsLog`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from .errors import UserError

class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a metrics record (no step, flags, strings or lists)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


def _flat_config(run_dir: Path) -> dict[str, Any]:
    """RUN/run_config.yaml as {"train.lr": 0.001, ...} ({} when there is none)."""
    import yaml

    path = run_dir / "run_config.yaml"
    if not path.is_file():
        return {}
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix.rstrip(".")] = node
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.pop("history", None)  # resume.py's record of starts and resumes, not a setting
    walk(data, "")
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, ids: dict, resumed: bool):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without tensorboard

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, val in values.items():
            self.writer.add_scalar(key, val, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, ids: dict, resumed: bool):
        import wandb

        # A resumed run logs into the same W&B run; a fresh one gets a new id from W&B.
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "transfergen"), name=str(run_dir),
                              dir=str(run_dir), id=ids.get("wandb") if resumed else None, resume="allow",
                              config=_flat_config(run_dir))
        ids["wandb"] = self.run.id
        # Our step is a metric, not W&B's own counter: a resume may repeat steps past its checkpoint.
        self.run.define_metric("*", step_metric="step")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "step": step})

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, ids: dict, resumed: bool):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()  # $MLFLOW_TRACKING_URI, as mlflow itself reads it
        if resumed and ids.get("mlflow"):
            self.run_id = ids["mlflow"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "transfergen")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        self.run_id = ids["mlflow"] = self.client.create_run(exp_id, run_name=str(run_dir)).info.run_id
        params = [Param(k, str(v)[:500]) for k, v in _flat_config(run_dir).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKER_CLASSES = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


def open_trackers(names: list[str], run_dir: Path, ids: dict[str, str], resumed: bool) -> list[Tracker]:
    """Start the named trackers; a missing package is said once here, a failing start stops.
    `ids` holds the tracker runs' ids (RUN/tracking.json): read to resume them, filled when new."""
    out: list[Tracker] = []
    for name in dict.fromkeys(names):
        try:
            out.append(TRACKER_CLASSES[name](run_dir, ids, resumed))
        except ImportError as exc:
            print(f"[transfergen] train.report_to: {name} is not installed ({exc.name or exc}): "
                  f"pip install 'transfergen[{name}]'; logging to metrics.jsonl without it",
                  file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - a bad URI, project or credentials: stop before training
            for tracker in out:
                tracker.close()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"config key 'train.report_to': {name} could not start ({first})") from None
    return out
