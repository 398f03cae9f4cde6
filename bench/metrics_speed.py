"""Metric speed: our CIDEr-D against pycocoevalcap's `CiderScorer`, same input, one run.

Input: 5,000 items x 5 references. With ../shared/data present, Multi30k task2
captions (hypothesis = caption 1 of image i; references = captions 2-5 of image i and
caption 2 of image i+1, a near miss); otherwise synthetic template sentences. Both
scorers get the same pre-tokenized text (lower-case, punctuation split off), so only
the scoring is timed; rounds are interleaved (ours, theirs, ...) so the machine's
drift hits both, and each side keeps its best. The scores are checked to agree to 1e-6.

Then, if bench/generate_speed.py exists (it exposes `run(quick) -> list[dict]`), its
rows are printed as a second table.

    python bench/metrics_speed.py            # 5,000 items, 3 rounds
    python bench/metrics_speed.py --quick    # < 60 s: 2,000 items, 1 round; last line: cider_speedup=X
    python bench/metrics_speed.py --record   # also append the tables to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import platform
import random
import time
from pathlib import Path

import numpy as np

from transfergen.metrics import cider
from transfergen.metrics.tokenize import words

HERE = Path(__file__).resolve().parent
MULTI30K = HERE.parents[1] / "shared" / "data" / "multi30k" / "task2"


def multi30k_items(n: int) -> tuple[list[str], list[list[str]]]:
    """Caption 1 as hypothesis; captions 2-5 plus the next image's caption 2 as references."""
    caps = []
    for k in range(1, 6):
        with gzip.open(MULTI30K / f"train.{k}.en.gz", "rt", encoding="utf-8") as fh:
            caps.append([next(fh).rstrip("\n") for _ in range(n + 1)])
    refs = [[caps[k][i] for k in range(1, 5)] + [caps[1][i + 1]] for i in range(n)]
    return caps[0][:n], refs


def synthetic_items(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Template captions ("a man in a red shirt is riding a bike near the river")."""
    rng = random.Random(seed)
    parts = [["a man", "a woman", "two dogs", "a child", "three people", "an old man", "a girl"],
             ["in a red shirt", "with a hat", "in blue jeans", "with long hair", ""],
             ["is riding", "is walking", "is playing with", "is looking at", "is holding", "sits on"],
             ["a bike", "a ball", "the water", "a bench", "a large dog", "the street"],
             ["near the river", "in the park", "at night", "on a sunny day", ""]]

    def sentence() -> str:
        return " ".join(p for p in (rng.choice(opts) for opts in parts) if p)

    return [sentence() for _ in range(n)], [[sentence() for _ in range(5)] for _ in range(n)]


def time_cider(hyps: list[str], refs: list[list[str]], rounds: int) -> dict:
    """Best-of-`rounds` seconds for both scorers on the same pre-tokenized input."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    tok_h = [" ".join(words(h)) for h in hyps]
    tok_r = [[" ".join(words(r)) for r in rs] for rs in refs]
    ours_t, coco_t = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        ours = cider(tok_h, tok_r, pretokenized=True)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        scorer = CiderScorer(n=4, sigma=6.0)
        for h, rs in zip(tok_h, tok_r, strict=True):
            scorer += (h, rs)
        coco, coco_items = scorer.compute_score()
        coco_t.append(time.perf_counter() - t)
    diff = max(abs(ours.score - coco), float(np.max(np.abs(np.array(ours.details["per_item"]) - coco_items))))
    assert diff < 1e-6, f"CIDEr-D differs from pycocoevalcap by {diff}"
    return {"items": len(hyps), "refs": sum(map(len, refs)), "ours_s": min(ours_t), "coco_s": min(coco_t),
            "speedup": min(coco_t) / min(ours_t), "cider": ours.score, "max_diff": diff}


def cider_table(r: dict, source: str) -> str:
    return "\n".join([
        f"CIDEr-D, {r['items']:,} items x {r['refs'] // r['items']} references ({source}), best of rounds:", "",
        "| items | references | ours s | pycocoevalcap s | speedup | CIDEr-D | max abs diff |",
        "|---|---|---|---|---|---|---|",
        f"| {r['items']:,} | {r['refs']:,} | {r['ours_s']:.3f} | {r['coco_s']:.3f} | {r['speedup']:.1f}x | "
        f"{r['cider']:.4f} | {r['max_diff']:.1e} |"])


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def generate_table(quick: bool) -> str | None:
    """Run bench/generate_speed.py's `run(quick)` if that file exists; rows as a table."""
    path = HERE / "generate_speed.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("generate_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.run(quick)
    if not rows:
        return "generate_speed: no rows"
    cols = list(rows[0])
    lines = ["Generation speed (bench/generate_speed.py):", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in cols) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return (f"{cpu}, Python {platform.python_version()}, numpy {np.__version__}, "
            f"pycocoevalcap {version('pycocoevalcap')}, sacrebleu {version('sacrebleu')}, "
            f"rouge-score {version('rouge-score')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--items", type=int, default=None, help="default 5000 (2000 with --quick)")
    ap.add_argument("--record", action="store_true", help="append the tables to bench/RESULTS.md")
    args = ap.parse_args()
    n = args.items or (2000 if args.quick else 5000)
    real = MULTI30K.is_dir()
    hyps, refs = multi30k_items(n) if real else synthetic_items(n)
    r = time_cider(hyps, refs, rounds=1 if args.quick else 3)
    header = (f"### metrics_speed {'--quick ' if args.quick else ''}({time.strftime('%Y-%m-%d')})\n\n"
              f"Machine: {machine()}\n")
    tables = [cider_table(r, "Multi30k task2" if real else "synthetic")]
    gen = generate_table(args.quick)
    if gen:
        tables.append(gen)
    text = header + "\n" + "\n\n".join(tables)
    print(text)
    if args.record:
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + text + "\n")
    print(f"cider_speedup={r['speedup']:.2f}")


if __name__ == "__main__":
    main()
