"""Copy warm-up: train a fresh tiny model on synthetic copy sequences (curriculum n=8..32), save HF folder."""
import os
import sys, time, random, torch, torch.nn.functional as F
from transfergen.model import build_model
from transfergen.shape import resolve_shape
from transfergen.config import ModelConfig
from transfergen.hub import save_model
from transfergen.tokenizer import TextTokenizer
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
out, steps, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tok = TextTokenizer.load(os.environ.get('EXP', 'runs/frontier') + '/pre_lm'); V = tok.vocab_size
def seq(rng, n):
    ids = [rng.randrange(4, V) for _ in range(n)]
    return [tok.bos_id, *ids, tok.sep_id, *ids, tok.eos_id], n + 2
def batch(items):
    T = max(len(i) for i, _ in items)
    x = torch.full((len(items), T), tok.pad_id); y = torch.full((len(items), T), -100)
    for r, (ids, st) in enumerate(items):
        x[r, :len(ids)] = torch.tensor(ids); y[r, st-1:len(ids)-1] = torch.tensor(ids[st:])  # loss on the copy only
    return x, y
model = build_model(resolve_shape(ModelConfig(preset='tiny', max_seq_len=128), V, tok.bos_id, tok.eos_id, tok.pad_id), seed=0)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
rng = random.Random(1); t0 = time.time()
for step in range(1, steps + 1):
    for g in opt.param_groups: g['lr'] = 3e-3 * min(1, step / 20)
    hi = min(32, 8 + 24 * step // max(1, steps // 2))  # curriculum: spans up to 8 -> 32 tokens over the first half
    x, y = batch([seq(rng, rng.randint(4, hi)) for _ in range(bs)])
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()
    if step % 100 == 0: print(f"step {step} n<={hi} copy-loss {loss.item():.3f} ({time.time()-t0:.0f}s)", flush=True)
save_model(model, out); tok.save(out)
