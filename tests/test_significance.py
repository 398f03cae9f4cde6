"""Paired bootstrap: sacrebleu's p-values for BLEU/chrF, sane intervals for every metric."""

from __future__ import annotations

import random

import pytest

from transfergen.errors import UserError
from transfergen.metrics import bleu, chrf, rouge
from transfergen.metrics.significance import paired_bootstrap, paired_bootstrap_seeds

WORDS = ("the a man woman dog child plays runs sits near park street red blue ball water "
         "two three young old small big on in with at").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _systems(n: int = 120, seed: int = 0):
    """References, a good system (often the reference with one word changed), a weak one."""
    rng = random.Random(seed)
    refs = [_sentence(rng, rng.randint(5, 12)) for _ in range(n)]
    good, weak = [], []
    for r in refs:
        words = r.split()
        words[rng.randrange(len(words))] = rng.choice(WORDS)
        good.append(" ".join(words) if rng.random() < 0.7 else _sentence(rng, len(words)))
        weak.append(_sentence(rng, len(words)))
    return [[r] for r in refs], good, weak


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_p_value_is_sacrebleus(metric):
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    refs, good, weak = _systems()
    ours = paired_bootstrap(metric, good, weak, refs)
    m = BLEU(tokenize="13a") if metric == "bleu" else CHRF()
    _, scores = PairedTest([("weak", weak), ("good", good)], {metric: m}, [[r[0] for r in refs]],
                           test_type="bs", n_samples=1000)()
    theirs = next(v for k, v in scores.items() if k != "System")[1]
    assert ours.p == pytest.approx(theirs.p_value)
    fn = bleu if metric == "bleu" else chrf
    assert ours.delta == pytest.approx(fn(good, refs).score - fn(weak, refs).score, abs=1e-4)


def test_a_real_gain_is_significant_and_its_interval_brackets_it():
    refs, good, weak = _systems()
    res = paired_bootstrap("rouge1", good, weak, refs)
    gap = rouge(good, refs).details["rouge1"] - rouge(weak, refs).details["rouge1"]
    assert res.delta == pytest.approx(gap) and gap > 20
    assert 0 < res.ci_low < res.delta < res.ci_high and res.p < 0.01 and res.significant
    back = paired_bootstrap("rouge1", weak, good, refs)  # the other way round: mirrored
    assert back.delta == pytest.approx(-res.delta) and back.p == res.p
    assert back.ci_high == pytest.approx(-res.ci_low) and back.ci_low == pytest.approx(-res.ci_high)


def test_noise_is_not_significant():
    """Two weak systems drawn the same way: a gap of chance size, p well above 0.05."""
    refs, _, _ = _systems()
    a, b = random.Random(1), random.Random(2)
    weak = [_sentence(a, len(r[0].split())) for r in refs]
    other = [_sentence(b, len(r[0].split())) for r in refs]
    res = paired_bootstrap("cider", weak, other, refs)
    assert res.ci_low < 0 < res.ci_high and res.p > 0.05 and not res.significant


def test_identical_outputs_give_p_one():
    refs, good, _ = _systems()
    res = paired_bootstrap("bleu", good, good, refs)
    assert res.delta == 0 and res.ci_low == res.ci_high == 0 and res.p == 1.0 and not res.significant


def test_several_seeds_average_deltas_on_shared_resamples():
    refs, good, weak = _systems()
    one = paired_bootstrap("rougeL", good, weak, refs)
    two = paired_bootstrap_seeds("rougeL", [(good, weak), (good, weak)], refs)
    assert two.seed_deltas == pytest.approx([one.delta, one.delta]) and two.delta == pytest.approx(one.delta)
    assert (two.ci_low, two.ci_high, two.p) == pytest.approx((one.ci_low, one.ci_high, one.p))
    mixed = paired_bootstrap_seeds("rougeL", [(good, weak), (weak, weak)], refs)
    assert mixed.delta == pytest.approx(one.delta / 2)


def test_unknown_metric_is_a_user_error():
    refs, good, weak = _systems(10)
    with pytest.raises(UserError, match="no paired bootstrap for metric 'blue'"):
        paired_bootstrap("blue", good, weak, refs)
