import sys, time, math, random, torch, torch.nn.functional as F
from transfergen.model import build_model, resolve_shape
from transfergen.config import ModelConfig
torch.set_num_threads(1)
V = 4096
def seq(rng, n):
    ids = [rng.randrange(4, V) for _ in range(n)]
    return [1, *ids, 3, *ids, 2], n + 2
def batch(items):
    T = max(len(i) for i, _ in items)
    x = torch.zeros((len(items), T), dtype=torch.long); y = torch.full((len(items), T), -100)
    m = torch.zeros((len(items), T), dtype=torch.bool)
    for r, (ids, st) in enumerate(items):
        x[r, :len(ids)] = torch.tensor(ids); y[r, :len(ids)-1] = torch.tensor(ids[1:]); m[r, st-1:len(ids)-1] = True
    return x, y, m
def run(name, steps, lr, n, bs=16, **shape):
    cfg = ModelConfig(preset='tiny', max_seq_len=128, **shape)
    model = build_model(resolve_shape(cfg, V, 1, 2, 0), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng = random.Random(1); vr = random.Random(2); val = [seq(vr, n) for _ in range(64)]; t0 = time.time()
    for step in range(1, steps + 1):
        for g in opt.param_groups: g['lr'] = lr * min(1, step / 20)
        x, y, m = batch([seq(rng, n) for _ in range(bs)])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()
        if step % 50 == 0:
            with torch.no_grad():
                x, y, m = batch(val); l = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction='none').view(y.shape)
            print(f"{name} step {step} copy-loss {l[m].mean():.3f} ({time.time()-t0:.0f}s)", flush=True)
for spec in sys.argv[1:]:
    name, steps, lr, n, *rest = spec.split(':')
    run(name, int(steps), float(lr), int(n), **{k: int(v) for k, v in (kv.split('=') for kv in rest)})
