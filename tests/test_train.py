"""The training loop: loss falls, accumulation is exact, resume is exact, saves are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import transfergen.hub as model_mod
import transfergen.train as train_mod
from transfergen.checkpoint import latest_checkpoint, list_checkpoints
from transfergen.errors import UserError
from transfergen.hub import load_model
from transfergen.pretrain import run_pretrain

from conftest import tiny_config


def records(run: Path, key: str) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if key in rec:
            out[rec["step"]] = rec[key]
    return out


def test_loss_falls_and_checkpoint_loads(corpus, tmp_path):
    run = tmp_path / "run"
    state = run_pretrain(tiny_config(corpus, run))
    losses = records(run, "loss")
    val = records(run, "val_loss")
    assert state["step"] == 30 and sorted(val) == [10, 20, 30]
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (28, 29, 30)) / 3
    assert last < first - 1.0, (first, last)  # ln(320)=5.8 at start; templates are learnable
    assert val[30] < val[10]
    setup = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert setup["event"] == "setup" and setup["frozen_params"] == 0
    assert {g["name"] for g in setup["param_groups"]} == {"decay", "no_decay"}
    # RUN/ itself is an HF model folder with the final weights
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (run / name).is_file(), name
    assert [p.name for p in list_checkpoints(run)] == ["step-0000020", "step-0000030"]  # keep=2
    reloaded = load_model(run)
    x = torch.randint(0, 300, (1, 16))
    assert torch.isfinite(reloaded(x)).all()


def test_grad_accumulation_matches_big_batch(corpus, tmp_path):
    """batch 4 x accum 2 sees the same blocks as batch 8 and gives the same update."""
    common = {"train": {"max_steps": 3, "warmup_steps": 1, "eval_every": 100, "save_every": 100}}
    a = tiny_config(corpus, tmp_path / "a", **common)
    b = tiny_config(corpus, tmp_path / "b", train={**common["train"], "batch_size": 4, "grad_accum": 2})
    run_pretrain(a)
    run_pretrain(b)
    la, lb = records(tmp_path / "a", "loss"), records(tmp_path / "b", "loss")
    assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    pa, pb = load_model(tmp_path / "a").state_dict(), load_model(tmp_path / "b").state_dict()
    for k in pa:
        # Summation order differs between one batch of 8 and two of 4; AdamW divides by
        # sqrt(v), so a near-zero gradient's rounding can move its weight by ~1e-6 (seen on
        # an Ice Lake CPU: 1 of 4,096 weights off by 3e-6).
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-5)


def test_kill_and_resume_gives_identical_losses(corpus, tmp_path, monkeypatch):
    full = tmp_path / "full"
    run_pretrain(tiny_config(corpus, full))
    killed = tmp_path / "killed"
    real_step = train_mod._train_step

    def dying_step(run, *args, **kwargs):
        if run.state["step"] == 14:  # dies mid-way between the checkpoints at 10 and 20
            raise KeyboardInterrupt("simulated kill")
        return real_step(run, *args, **kwargs)

    monkeypatch.setattr(train_mod, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(tiny_config(corpus, killed))
    monkeypatch.setattr(train_mod, "_train_step", real_step)
    assert latest_checkpoint(killed).name == "step-0000010"
    with pytest.raises(UserError, match="--resume"):  # never silently overwrite a run
        run_pretrain(tiny_config(corpus, killed))
    run_pretrain(tiny_config(corpus, killed, resume=True))
    lf, lk = records(full, "loss"), records(killed, "loss")
    assert sorted(lk) == list(range(1, 31))  # steps 11-14 were logged twice, then truncated
    assert lk == lf  # bit-identical: same data order, optimizer moments and schedule
    assert records(killed, "val_loss") == records(full, "val_loss")


def test_crash_while_saving_keeps_previous_checkpoint(corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_pretrain(tiny_config(corpus, run, train={"max_steps": 10}))
    before = (run / "model.safetensors").read_bytes()
    real_save = model_mod.save_model

    def half_save(model, out_dir):
        real_save(model, out_dir)
        (Path(out_dir) / "model.safetensors").write_bytes(b"torn")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(model_mod, "save_model", half_save)
    with pytest.raises(UserError, match=r"step-0000020: OSError: disk full .* step-0000010, is intact"):
        run_pretrain(tiny_config(corpus, run, resume=True, train={"max_steps": 20}))
    monkeypatch.setattr(model_mod, "save_model", real_save)
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the partial folder went at once
    assert latest_checkpoint(run).name == "step-0000010"
    assert (run / "model.safetensors").read_bytes() == before
    state = run_pretrain(tiny_config(corpus, run, resume=True, train={"max_steps": 20}))
    assert state["step"] == 20
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000010", "step-0000020"]


def test_bf16_autocast_trains(corpus, tmp_path):
    run = tmp_path / "bf16"
    run_pretrain(tiny_config(corpus, run, train={"dtype": "bf16", "max_steps": 20}))
    losses = records(run, "loss")
    assert losses[20] < losses[1] - 0.5


@pytest.mark.slow
def test_compiled_training_follows_the_eager_losses(corpus, tmp_path):
    """train.compile changes how the step runs, not what it computes: same losses, a loadable folder."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    run_pretrain(tiny_config(corpus, eager, train={"max_steps": 4, "eval_every": 4, "save_every": 4}))
    run_pretrain(tiny_config(corpus, compiled, train={"max_steps": 4, "eval_every": 4, "save_every": 4,
                                                      "compile": True}))
    a, b = records(eager, "loss"), records(compiled, "loss")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert all(abs(a[s] - b[s]) < 1e-4 for s in a), (a, b)
    from transfergen.hub import load_model

    assert sorted(load_model(compiled).state_dict()) == sorted(load_model(eager).state_dict())


def test_best_checkpoint_and_early_stopping(corpus, tmp_path):
    """A metric that only gets worse after the first eval: best stays at step 5, patience stops."""
    from transfergen.hooks import Hooks
    from transfergen.pretrain import BlockBatches, corpus_docs
    from transfergen.session import build_initial_model, resolve_tokenizer
    from transfergen.train import train
    from transfergen.data.packing import prepare_corpus
    from transfergen.data.sampling import val_batches
    from transfergen.distributed import DistInfo

    cfg = tiny_config(corpus, tmp_path / "run", train={"max_steps": 40, "eval_every": 5, "best_metric": "score",
                                                       "patience": 2})
    tok = resolve_tokenizer(cfg, tmp_path / "run", DistInfo(), docs=lambda: corpus_docs(cfg))
    splits = prepare_corpus(cfg.data, tok, tmp_path / "cache")
    model = build_initial_model(cfg, tok)
    scores = iter([10.0, 9.0, 8.0, 7.0, 6.0])
    hooks = Hooks(evaluate=lambda m: {"score": next(scores)})
    t = cfg.train
    state = train(model, tok, BlockBatches(splits.train, t.seq_len, t.batch_size, t.seed, DistInfo()),
                  val_batches(splits.val, t.seq_len, t.batch_size, 2), t, tmp_path / "run", hooks=hooks)
    assert state["step"] == 15  # evals at 5 (best), 10, 15 -> two without improvement
    assert state["best"]["step"] == 5 and state["best"]["value"] == 10.0
    best = load_model(tmp_path / "run" / "best")
    assert isinstance(best, torch.nn.Module) and (tmp_path / "run" / "best" / "tokenizer.json").is_file()
    assert records(tmp_path / "run", "score") == {5: 10.0, 10: 9.0, 15: 8.0}
