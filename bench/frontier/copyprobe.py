"""How many steps until a tiny model copies? Train on [bos] ctx [sep] tgt [eos] and watch target loss."""
import os
import json, sys, time, math, random
import torch, torch.nn.functional as F
from transfergen.tokenizer import TextTokenizer
from transfergen.model import build_model, resolve_shape
from transfergen.config import ModelConfig

torch.set_num_threads(1)
tok = TextTokenizer.load(os.environ.get('EXP', 'runs/frontier') + '/pre_lm')
def load(path):
    pairs = [json.loads(l) for l in open(path)]
    random.Random(0).shuffle(pairs)
    enc = []
    for p in pairs:
        s = tok.encode(p['source'])[:96]; t = tok.encode(p['target'])[:29]
        ids = [tok.bos_id, *s, tok.sep_id, *t, tok.eos_id]
        enc.append((ids, 1 + len(s) + 1))
    return enc
val = load('copy.jsonl')[:256]
train = load(sys.argv[1])[256:]
SYN = 0.0
def synthetic(rng):
    n = rng.randint(20, 40); ids = [rng.randrange(4, tok.vocab_size) for _ in range(n)]
    a = rng.randrange(0, n - 8); b = min(n, a + rng.randint(8, 16))
    full = [tok.bos_id, *ids, tok.sep_id, *ids[a:b], tok.eos_id]
    return (full, n + 2)

def batch(items):
    T = max(len(i) for i, _ in items)
    x = torch.full((len(items), T), tok.pad_id); y = torch.full((len(items), T), -100); m = torch.zeros((len(items), T), dtype=torch.bool)
    for r, (ids, st) in enumerate(items):
        x[r, :len(ids)] = torch.tensor(ids); y[r, :len(ids)-1] = torch.tensor(ids[1:])
        m[r, st-1:len(ids)-1] = True  # positions predicting target tokens
    return x, y, m

def run(name, steps, lr, bs=16, **shape):
    cfg = ModelConfig(preset='tiny', max_seq_len=128, **shape)
    model = build_model(resolve_shape(cfg, tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng = random.Random(1); t0 = time.time()
    for step in range(1, steps + 1):
        mult = min(1, step / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups: g['lr'] = lr * mult
        x, y, m = batch([synthetic(rng) if rng.random() < SYN else rng.choice(train) for _ in range(bs)])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()
        if step % 100 == 0:
            with torch.no_grad():
                model.eval(); x, y, m = batch(val[:128]); lg = model(x)
                l = F.cross_entropy(lg.flatten(0, 1), y.flatten(), ignore_index=-100, reduction='none').view(y.shape)
                ctx = l[(y != -100) & ~m].mean().item(); tgt = l[m].mean().item(); model.train()
            print(f"{name} step {step} ctx {ctx:.3f} tgt {tgt:.3f} ({time.time()-t0:.0f}s)", flush=True)

for spec in sys.argv[2:]:
    name, steps, lr, *rest = spec.split(':')
    kv = dict(x.split('=') for x in rest)
    SYN = float(kv.pop('syn', 0))
    bs = int(kv.pop('bs', 16))
    shape = {k: int(v) for k, v in kv.items()}
    run(name, int(steps), float(lr), bs, **shape)
