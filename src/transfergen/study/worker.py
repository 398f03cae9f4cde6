"""One study run in its own process: `python -m transfergen.study.worker RUN_DIR`.

The pool (`pool.py`) writes RUN_DIR/study_run.yaml (the resolved RunConfig) and
study_job.json (the run's place in the grid); this fine-tunes (resuming a killed run),
evaluates on the test split, and for a transfer arm compares the result with the
pretrained model: layers.json (weight change, CKA) and attention.json (one attention
map of each model on the same test input). done.json is written last, so a run without
it is unfinished.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..config import RunConfig, build_config
from ..errors import EXIT_USER_ERROR, UserError, os_error_line
from ..folders import FolderLock
from ..io import read_json, read_metrics, write_json_atomic

ATTENTION_TOKENS = 40  # the last 40 prompt tokens keep an attention map legible


def run_one(run_dir: Path) -> dict:
    """Fine-tune (resuming), evaluate on test, analyse against the pretrained model; done.json last."""
    from ..checkpoint import latest_checkpoint

    job = read_json(run_dir / "study_job.json")
    cfg = build_config(RunConfig, [str(run_dir / "study_run.yaml")])
    with FolderLock(run_dir, "run"):  # held from fine-tuning to done.json; the session re-enters it
        cfg.resume = latest_checkpoint(run_dir) is not None
        return _run_locked(run_dir, cfg, job)


def _run_locked(run_dir: Path, cfg: RunConfig, job: dict) -> dict:
    """`run_one` holding the run folder's lock."""
    from ..evaluate import run_evaluate
    from ..finetune import run_finetune
    from ..metrics import flatten
    from ..metrics.base import Score

    state = run_finetune(cfg)
    t0 = time.perf_counter()
    test = run_evaluate(str(run_dir), cfg.task, "test", str(run_dir / "test"), cfg.eval, limit=job["test_examples"],
                        device=cfg.train.device)  # decoded where the run trained
    scores = flatten({k: Score(**v) for k, v in test["scores"].items()})
    setup = next((rec for rec in read_metrics(run_dir) if rec.get("event") == "setup"), {})
    if cfg.init != "scratch":
        _compare_with_pretrained(Path(cfg.init), run_dir, cfg, job)
    result = {"id": job["id"], "arm": job["arm"], "size": job["size"], "seed": job["seed"],
              "steps": state["step"], "tokens": state["tokens"], "flops": state.get("flops", 0.0),
              "train_s": round(state["elapsed_s"], 1), "test_s": round(time.perf_counter() - t0, 1),
              "train_examples": setup.get("train_examples"), "trainable_params": setup.get("trainable_params"),
              "frozen_params": setup.get("frozen_params"), "test": scores, "test_ppl": test["perplexity"],
              "test_n": test["n"]}
    write_json_atomic(run_dir / "done.json", result)
    return result


def _compare_with_pretrained(pretrained: Path, run_dir: Path, cfg: RunConfig, job: dict) -> None:
    """layers.json and attention.json, on the task's test sources (target inputs)."""
    from ..analysis.layers import layer_report
    from ..data.tasks import load_task
    from ..distributed import resolve_device

    test = load_task(cfg.task).test
    texts = [ex.source for ex in test[:job["analysis_texts"]]]
    device = resolve_device(cfg.train.device)
    write_json_atomic(run_dir / "layers.json", layer_report(str(pretrained), str(run_dir), texts, device=device))
    attention = attention_maps(pretrained, run_dir, cfg, test[0].source, job["arm"])
    if attention is not None:
        write_json_atomic(run_dir / "attention.json", attention)


def attention_maps(pretrained: Path, run_dir: Path, cfg: RunConfig, source: str, arm: str) -> dict | None:
    """The last layer's head-0 attention of the pretrained and the fine-tuned model on one
    prompt: {"tokens", "layer", "head", "maps": {name: (T,T) rows}}; None for models
    other than TransferGenLM (whose attention is not computed here)."""
    import torch

    from ..analysis.layers import attention_map
    from ..data.seq2seq import prompt_ids
    from ..distributed import resolve_device
    from ..hub import load_model
    from ..model import TransferGenLM
    from ..tokenizer import TextTokenizer

    tok = TextTokenizer.load(run_dir)
    ids = prompt_ids(tok, cfg.task, source)[-ATTENTION_TOKENS:]
    maps = {}
    for name, folder in (("pretrained", pretrained), (arm, run_dir)):
        model = load_model(folder, device=resolve_device(cfg.train.device))
        if not isinstance(model, TransferGenLM):
            return None
        probs = attention_map(model, torch.tensor([ids]), layer=-1, head=0)
        maps[name] = [[round(float(p), 5) for p in row] for row in probs]
    return {"tokens": [tok.decode([i]) or "·" for i in ids], "layer": -1, "head": 0, "maps": maps}


def main(argv: list[str]) -> int:
    """Run the study run in folder argv[0]; a user error is one line and exit 2."""
    try:
        run_one(Path(argv[0]))
    except UserError as exc:
        print(f"transfergen: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a filesystem fault (disk full, permissions)
        print(f"transfergen: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
