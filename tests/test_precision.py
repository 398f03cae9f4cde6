"""Training dtypes: `auto` follows the hardware, impossible dtypes fail in one line, fp16 scales."""

from __future__ import annotations

import json

import pytest
import torch

from transfergen.errors import ConfigError
from transfergen.precision import Precision, cpu_has_native_bf16, resolve_dtype
from transfergen.pretrain import run_pretrain

from conftest import tiny_config
from test_cli import TINY_FLAGS, run_cli

CPU = torch.device("cpu")


def test_auto_follows_the_cpu_and_explicit_dtypes_pass():
    assert resolve_dtype("auto", CPU) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_dtype("fp32", CPU) == "fp32"
    assert resolve_dtype("bf16", CPU) == "bf16"  # emulated where there is no bf16 unit, but it runs


@pytest.mark.parametrize("name, needle", [("fp16", "fp16 needs a CUDA device"), ("fp8", "unknown dtype 'fp8'")])
def test_dtypes_the_cpu_cannot_run_are_refused(name, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve_dtype(name, CPU)


@pytest.mark.parametrize("dtype", ["fp16", "fp8"])
def test_cli_refuses_them_before_any_work(corpus, tmp_path, dtype):
    out = tmp_path / "r"
    res = run_cli("pretrain", "--corpus", str(corpus), "--out", str(out), *TINY_FLAGS, f"--train.dtype={dtype}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("transfergen: error:")]
    assert len(lines) == 1 and "train.dtype" in lines[0], res.stderr
    assert not out.exists()  # refused before the run folder, tokenizer or cache were made


def test_the_resolved_dtype_is_recorded(corpus, tmp_path, one_thread):
    run = tmp_path / "run"
    run_pretrain(tiny_config(corpus, run, train={"dtype": "auto", "max_steps": 2, "eval_every": 2}))
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    setup = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert setup["dtype"] == expected
    assert f"dtype: {expected}" in (run / "run_config.yaml").read_text()


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_loss_scaling_gives_the_true_gradients_and_skips_overflow():
    """The fp16 path on a CPU scaler: scaled backward + unscale == plain backward; an inf
    gradient skips the update and halves the scale (what GradScaler promises on CUDA)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    model(x).pow(2).mean().backward()
    plain = _grads(model)
    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    prec = Precision("fp16", CPU, torch.amp.GradScaler("cpu", init_scale=1024.0))
    prec.backward(model(x).pow(2).mean())
    assert model.weight.grad.abs().sum() > 100 * plain[0].abs().sum()  # still scaled
    prec.unscale(opt)
    for a, b in zip(_grads(model), plain, strict=True):
        torch.testing.assert_close(a, b)
    prec.step(opt)
    assert prec.state_dict()["scale"] == 1024.0  # a finite step keeps the scale
    before = model.weight.detach().clone()
    opt.zero_grad()
    prec.backward(model(x).pow(2).mean())
    model.weight.grad[0, 0] = float("inf")
    prec.unscale(opt)
    prec.step(opt)
    assert torch.equal(model.weight, before) and prec.state_dict()["scale"] == 512.0
    fresh = Precision("fp16", CPU, torch.amp.GradScaler("cpu"))
    fresh.load_state_dict(prec.state_dict())  # what a checkpoint carries for exact resume
    assert fresh.state_dict()["scale"] == 512.0


def test_fp32_and_bf16_have_no_scaler():
    for dtype in ("fp32", "bf16"):
        prec = Precision.for_run(dtype, CPU)
        assert prec.scaler is None and prec.state_dict() == {}
