"""Ranks and devices: collectives on the rank's device, FSDP2 against DDP, activation checkpointing."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import torch.distributed as dist

from transfergen.distributed import DistInfo, any_rank_true, barrier, init_distributed, replica_divergence
from transfergen.errors import ConfigError
from transfergen.hub import load_model
from transfergen.model import build_model
from transfergen.parallel import checkpoint_blocks
from transfergen.shape import ModelShape

from test_cli import TINY_FLAGS, run_cli


@pytest.fixture
def fake_group():
    """A 2-rank process group that communicates nothing (torch's fake backend), as rank 0."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    yield
    dist.destroy_process_group()


@pytest.fixture
def collectives(monkeypatch):
    """Every tensor handed to all_reduce / broadcast / barrier, recorded as (op, device); CPU ones
    then go to the fake group (which cannot open a CUDA stream on this machine)."""
    seen: list[tuple[str, str]] = []
    for op in ("all_reduce", "broadcast"):
        real = getattr(dist, op)

        def spy(tensor, *args, _op=op, _real=real, **kwargs):
            seen.append((_op, str(tensor.device)))
            return _real(tensor, *args, **kwargs) if tensor.device.type == "cpu" else None
        monkeypatch.setattr(dist, op, spy)
    monkeypatch.setattr(dist, "barrier", lambda **kw: seen.append(("barrier", str(kw.get("device_ids")))))
    return seen


def test_no_collective_touches_a_cpu_tensor_on_a_gpu_rank(fake_group, collectives):
    """A GPU rank (NCCL: no CPU tensors): fake CUDA tensors stand in for the GPU on this CPU box.
    Reading a fake tensor's value is impossible, which is where each helper ends here."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    unreadable = (DataDependentOutputException, RuntimeError)

    info = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cuda", 0))
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = torch.nn.ParameterList([torch.zeros(4, 4, device="cuda"), torch.ones(4, device="cuda")])
        with pytest.raises(unreadable):
            any_rank_true(True, info)
        with pytest.raises(unreadable):
            replica_divergence(model, info)
    barrier(info)
    assert collectives == [("all_reduce", "cuda:0"), ("broadcast", "cuda:0"), ("all_reduce", "cuda:0"),
                           ("barrier", "[0]")]


def test_collectives_on_a_cpu_rank_give_the_numbers(fake_group, collectives):
    info = DistInfo(rank=0, world_size=2, local_rank=0)
    assert any_rank_true(True, info) is True and any_rank_true(False, info) is False
    assert replica_divergence(torch.nn.Linear(4, 4), info) == 0.0  # the fake broadcast leaves rank 0's own
    assert {d for op, d in collectives if op != "barrier"} == {"cpu"}


def test_init_distributed_picks_nccl_for_a_gpu_and_keeps_the_device(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(backend))
    info = init_distributed(torch.device("cuda", 1))
    assert calls == ["nccl"] and info.device == torch.device("cuda", 1) and info.rank == 1
    assert init_distributed(torch.device("cpu")).device.type == "cpu" and calls[-1] == "gloo"
    assert init_distributed(torch.device("mps")).device.type == "cpu" and calls[-1] == "gloo"  # gloo: CPU tensors


@pytest.mark.parametrize("name, needle", [
    ("mps", "'mps' asks for Apple's GPU"), ("cuda:3", "asks for CUDA device 3"), ("tpu", "unknown device 'tpu'")])
def test_a_device_this_machine_lacks_is_one_line(name, needle, monkeypatch):
    from transfergen.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=needle) as err:
        resolve_device(name, key="--device")
    assert str(err.value).startswith("config key '--device'") and "\n" not in str(err.value)
    assert resolve_device("auto") == torch.device("cpu")


def test_checkpoints_keep_and_restore_the_cuda_rng(monkeypatch, tmp_path):
    """CUDA stood in by its RNG calls: what the GPU's RNG held is saved and put back on resume."""
    from transfergen.checkpoint import load_training_state, restore_rng, save_checkpoint

    class Tok:
        def save(self, folder):
            (folder / "tokenizer.json").write_text("{}")

    cuda_state, restored = torch.arange(16, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: cuda_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    shape = ModelShape(vocab_size=32, n_layer=1, d_model=16, n_head=2, n_kv_head=2, d_ff=32, max_seq_len=8)
    folder = save_checkpoint(tmp_path, 3, build_model(shape, seed=0), Tok(), {"state": {}, "param_groups": []},
                             {"step": 3})
    _, tensors = load_training_state(folder)
    restore_rng(tensors)
    assert len(restored) == 1 and torch.equal(restored[0], cuda_state)


# ---------------------------------------------------------------------------
# activation checkpointing


def _saved_bytes(model: torch.nn.Module, ids: torch.Tensor) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes autograd keeps for the backward of one forward, and the gradients it then gives."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t
    model.zero_grad()
    torch.manual_seed(0)  # the same dropout masks (GPT-2's) in both passes; recomputation replays them
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids)
    logits.float().logsumexp(-1).mean().backward()
    return total[0], {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_keeps_gradients_and_saves_less():
    shape = ModelShape(vocab_size=64, n_layer=3, d_model=32, n_head=4, n_kv_head=2, d_ff=64, max_seq_len=32)
    model, ids = build_model(shape, seed=0), torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(0))
    plain_bytes, plain = _saved_bytes(model, ids)
    names = list(model.state_dict())
    assert checkpoint_blocks(model) == 3
    ckpt_bytes, grads = _saved_bytes(model, ids)
    assert list(model.state_dict()) == names  # parameter names (and saved folders) unchanged
    for n, g in plain.items():
        torch.testing.assert_close(grads[n], g, rtol=1e-5, atol=1e-6)
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)


# ---------------------------------------------------------------------------
# FSDP2 under torchrun, two CPU processes (gloo)


def _torchrun(corpus, out, *flags: str):
    res = run_cli("--nproc_per_node", "2", "--standalone", "-m", "transfergen", "pretrain", "--corpus", str(corpus),
                  "--out", str(out), *TINY_FLAGS, "--train.max_steps=10", "--train.seed=7", "--train.save_every=5",
                  *flags, module=[sys.executable, "-m", "torch.distributed.run"])
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _losses(run) -> dict[tuple[str, int], float]:
    """{("loss", step): training loss, ("val_loss", step): validation loss} of a run."""
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {(k, r["step"]): r[k] for r in recs for k in ("loss", "val_loss") if k in r}


@pytest.mark.slow
def test_fsdp_matches_ddp_and_resumes_exactly(corpus, tmp_path):
    """2 ranks: FSDP2 follows DDP's losses to 1e-5 over 10 steps and saves the same HF model;
    an FSDP run cut after its step-5 checkpoint resumes to the same weights."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    _torchrun(corpus, ddp)
    _torchrun(corpus, fsdp, "--train.parallel=fsdp", "--train.activation_checkpointing=true")
    a, b = _losses(ddp), _losses(fsdp)
    assert sorted(a) == sorted(b) and len([k for k in a if k[0] == "loss"]) == 10
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-5), (key, a[key], b[key])
    recs = [json.loads(ln) for ln in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["replica_divergence"] for r in recs if "replica_divergence" in r] == [0.0, 0.0]
    wa, wb = load_model(ddp).state_dict(), load_model(fsdp).state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)

    cut = tmp_path / "cut"  # what a kill after the step-5 checkpoint leaves
    shutil.copytree(fsdp, cut)
    shutil.rmtree(cut / "checkpoints" / "step-0000010")
    _torchrun(corpus, cut, "--train.parallel=fsdp", "--train.activation_checkpointing=true", "--resume")
    wc = load_model(cut).state_dict()
    for k in wb:
        torch.testing.assert_close(wc[k], wb[k], rtol=0, atol=0)
    opt_b = torch.load(fsdp / "checkpoints" / "step-0000010" / "training_state.pt", weights_only=True)["optimizer"]
    opt_c = torch.load(cut / "checkpoints" / "step-0000010" / "training_state.pt", weights_only=True)["optimizer"]
    assert sorted(opt_b["state"]) == sorted(opt_c["state"]) and "model.embed_tokens.weight" in opt_b["state"]
    for k in opt_b["state"]:
        torch.testing.assert_close(opt_c["state"][k]["exp_avg_sq"], opt_b["state"][k]["exp_avg_sq"], rtol=0, atol=0)
