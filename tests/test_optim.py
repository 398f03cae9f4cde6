"""Schedules are pure functions of the step; clipping bounds the global norm."""

import math

import pytest
import torch

from transfergen.config import TrainConfig
from transfergen.errors import ConfigError
from transfergen.optim import apply_lr, build_optimizer, clip_gradients, default_param_groups, lr_multiplier


def mult(step, schedule, warmup=10, max_steps=110, ratio=0.1):
    return lr_multiplier(step, schedule=schedule, warmup_steps=warmup, max_steps=max_steps, min_lr_ratio=ratio)


@pytest.mark.parametrize("schedule", ["exponential", "cosine", "constant"])
def test_linear_warmup(schedule):
    assert [mult(s, schedule) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert mult(9, schedule) == pytest.approx(1.0)


def test_exponential_decay_values():
    assert mult(10, "exponential") == pytest.approx(1.0)
    assert mult(60, "exponential") == pytest.approx(0.1 ** 0.5)  # half way: geometric mean
    assert mult(110, "exponential") == pytest.approx(0.1)
    assert mult(500, "exponential") == pytest.approx(0.1)  # clamps after max_steps
    # constant ratio between consecutive steps: the defining property of exponential decay
    r = [mult(s + 1, "exponential") / mult(s, "exponential") for s in range(10, 100)]
    assert max(r) - min(r) < 1e-12


def test_cosine_values():
    assert mult(10, "cosine") == pytest.approx(1.0)
    assert mult(60, "cosine") == pytest.approx(0.1 + 0.9 * 0.5)
    assert mult(110, "cosine") == pytest.approx(0.1)
    assert mult(35, "cosine") == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_unknown_schedule():
    with pytest.raises(ConfigError, match=r"train\.schedule"):
        mult(0, "linearish")


def test_groups_keep_their_ratio_under_the_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    groups = [{"params": list(model[0].parameters()), "base_lr": 1e-4, "weight_decay": 0.0},
              {"params": list(model[1].parameters()), "base_lr": 1e-3, "weight_decay": 0.0}]
    opt = build_optimizer(groups, TrainConfig())
    for m in (0.05, 0.5, 1.0):
        lrs = apply_lr(opt, m)
        assert lrs == pytest.approx([1e-4 * m, 1e-3 * m])


def test_norm_params_are_not_decayed():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = default_param_groups(model, 1e-3, 0.1)
    by_name = {g["name"]: g for g in groups}
    assert sum(p.numel() for p in by_name["decay"]["params"]) == 16
    assert by_name["no_decay"]["weight_decay"] == 0.0
    assert sum(p.numel() for p in by_name["no_decay"]["params"]) == 4 + 4 + 4


def test_clipping_bounds_global_norm():
    p1, p2 = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    p1.grad, p2.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)
    before = clip_gradients([p1, p2], 1.0)
    assert before == pytest.approx(math.sqrt(9 * 3 + 16 * 4))
    after = torch.cat([p1.grad, p2.grad]).norm().item()
    assert after == pytest.approx(1.0, rel=1e-5)
    # direction is preserved: clipping scales, it does not reshape the gradient
    assert (p1.grad[0] / p2.grad[0]).item() == pytest.approx(3 / 4)
    p1.grad = torch.full((3,), 0.1)
    assert clip_gradients([p1], None) == pytest.approx(math.sqrt(0.03))
    assert p1.grad[0].item() == pytest.approx(0.1)
