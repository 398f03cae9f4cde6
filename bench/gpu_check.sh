#!/usr/bin/env bash
# The GPU acceptance check, run by hand on a CUDA machine (it needs nothing from the internet):
#
#     bash bench/gpu_check.sh [WORK_DIR]        # default WORK_DIR: a fresh mktemp -d
#
# What it checks, each step printing PASS or stopping with FAIL and the reason:
#   1. cpu-vs-gpu  pretrain a tiny model for 50 steps on one GPU in fp32 and on the CPU with the
#                  same seed: the step-1 loss agrees to 1e-3 and the last loss to 5e-2 (GPU kernels
#                  sum in another order); then 50 steps in bf16 on the GPU: the loss falls.
#   2. torchrun    the same 50 bf16 steps on every visible GPU (DDP): replicas stay identical
#                  (replica_divergence 0.0); and with train.parallel=fsdp and activation
#                  checkpointing: its losses follow DDP's to 1e-2 (bf16).
#   3. resume      the DDP run killed (SIGKILL) after its step-25 checkpoint, then resumed: the
#                  losses of steps 26-50 equal the uninterrupted run's to 1e-4.
#   4. transfer    finetune the GPU model on a toy task (bf16), evaluate it with --device $DEV, and
#                  generate with --device $DEV: each exits 0 and writes what it should; the
#                  fine-tuned val_loss on the GPU is within 5e-2 of the same fine-tuning on the CPU.
# Record the outcome (machine, GPUs, torch version, PASS/FAIL lines) in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."                      # the repository root: runs from a checkout as it is
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"

PY=${PYTHON:-python}                          # e.g. PYTHON=.venv/bin/python
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
# GPU_CHECK_DEVICE=cpu rehearses the script itself on a CPU box (2 gloo ranks); it proves nothing about GPUs.
DEV=${GPU_CHECK_DEVICE:-cuda}
if [ "$DEV" = cpu ]; then NGPU=2; else
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
  if [ "$NGPU" -lt 1 ]; then echo "FAIL: no CUDA device visible (torch.cuda.device_count() is 0)"; exit 1; fi
fi
echo "gpu_check: $NGPU GPU(s), work dir $WORK"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# A template corpus and a toy task (as the tests build them): learnable in a few dozen steps.
$PY - "$WORK" <<'EOF'
import json, random, sys
from pathlib import Path
root = Path(sys.argv[1]); rng = random.Random(0)
S = ["the king", "a soldier", "my lord", "the queen", "this night", "our army", "the fool", "her heart"]
V = ["speaks of", "remembers", "dreams of", "fears", "betrays", "defends", "loves", "forgets"]
O = ["the crown", "a distant shore", "the old castle", "his brother", "the morning", "sweet music"]
lines = [f"{rng.choice(S).capitalize()} {rng.choice(V)} {rng.choice(O)}, and {rng.choice(S)} {rng.choice(V)} "
         f"{rng.choice(O)}." for _ in range(4000)]
(root / "corpus.txt").write_text("\n".join(lines) + "\n")
with open(root / "pairs.jsonl", "w") as fh:
    for _ in range(400):
        fh.write(json.dumps({"source": rng.choice(S).capitalize(), "target": f"{rng.choice(V)} {rng.choice(O)}."}) + "\n")
(root / "task.yaml").write_text(f"name: toy\nreader: jsonl\npath: {root / 'pairs.jsonl'}\nval_size: 40\n"
                                "test_size: 40\nmax_source_tokens: 16\nmax_target_tokens: 16\n")
EOF

TINY=(--model.preset=tiny --model.d_model=128 --model.n_layer=4 --model.n_head=4 --model.d_ff=256
      --model.max_seq_len=128 --tokenizer.vocab_size=512 --train.batch_size=8 --train.seq_len=64
      --train.max_steps=50 --train.warmup_steps=5 --train.lr=3e-3 --train.seed=11 --train.log_every=1
      --train.eval_every=25 --train.save_every=25 --train.eval_batches=2 --data.val_fraction=0.1
      --data.num_workers=1)
pretrain() { $PY -m transfergen pretrain --corpus "$WORK/corpus.txt" "${TINY[@]}" "$@"; }
torchrun_pretrain() { $PY -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m transfergen pretrain \
    --corpus "$WORK/corpus.txt" "${TINY[@]}" "$@"; }
# compare RUN_A RUN_B FIRST_STEP LAST_STEP TOL: the training losses of two runs, step by step
compare() {
  $PY - "$@" <<'EOF'
import json, sys
a, b, first, last, tol = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def losses(run):
    recs = [json.loads(x) for x in open(f"{run}/metrics.jsonl")]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}
la, lb = losses(a), losses(b)
worst = max(abs(la[s] - lb[s]) for s in range(first, last + 1))
print(f"  steps {first}-{last}: max |loss difference| {worst:.2e} (tolerance {tol:g})")
sys.exit(0 if worst <= tol else 1)
EOF
}
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; exit 1; }

echo "== 1. cpu-vs-gpu"
pretrain --out "$WORK/cpu" --train.device=cpu --train.dtype=fp32 > /dev/null
pretrain --out "$WORK/gpu32" --train.device=$DEV --train.dtype=fp32 --tokenizer.path="$WORK/cpu/tokenizer" > /dev/null
compare "$WORK/cpu" "$WORK/gpu32" 1 1 1e-3 || fail "step-1 loss differs between CPU and GPU (fp32)"
compare "$WORK/cpu" "$WORK/gpu32" 50 50 5e-2 || fail "step-50 loss differs between CPU and GPU (fp32)"
pretrain --out "$WORK/gpu16" --train.device=$DEV --train.dtype=bf16 --tokenizer.path="$WORK/cpu/tokenizer" > /dev/null
$PY -c "
import json; r=[json.loads(x) for x in open('$WORK/gpu16/metrics.jsonl')]; l={x['step']:x['loss'] for x in r if 'loss' in x}
assert l[50] < l[1] - 1.0, l; print('  bf16 loss', round(l[1],3), '->', round(l[50],3))" || fail "bf16 loss did not fall"
pass "CPU and GPU agree; bf16 trains"

echo "== 2. torchrun on $NGPU GPU(s)"
TOK=(--tokenizer.path="$WORK/cpu/tokenizer" --train.dtype=bf16)
torchrun_pretrain --out "$WORK/ddp" "${TOK[@]}" > /dev/null
$PY -c "
import json; d=[json.loads(x).get('replica_divergence') for x in open('$WORK/ddp/metrics.jsonl')]
d=[x for x in d if x is not None]; assert all(x == 0.0 for x in d), d; print('  replica_divergence', d)" \
  || fail "DDP replicas diverged"
torchrun_pretrain --out "$WORK/fsdp" "${TOK[@]}" --train.parallel=fsdp --train.activation_checkpointing=true > /dev/null
compare "$WORK/ddp" "$WORK/fsdp" 1 50 1e-2 || fail "FSDP losses differ from DDP's"
pass "DDP replicas identical; FSDP follows DDP"

echo "== 3. kill and resume"
# In a session of its own, so that one signal to its process group kills torchrun and every rank.
setsid $PY -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m transfergen pretrain \
  --corpus "$WORK/corpus.txt" "${TINY[@]}" --out "$WORK/killed" "${TOK[@]}" > "$WORK/killed.log" 2>&1 &
PID=$!
until [ -f "$WORK/killed/checkpoints/step-0000025/trainer_state.json" ] || ! kill -0 $PID 2>/dev/null; do sleep 0.2; done
kill -9 -- -$PID 2>/dev/null || true
wait $PID 2>/dev/null || true
[ -d "$WORK/killed/checkpoints/step-0000050" ] && echo "  (the run finished before the kill landed; resume is still checked)"
rm -rf "$WORK/killed/checkpoints/step-0000050"
torchrun_pretrain --out "$WORK/killed" "${TOK[@]}" --resume > /dev/null
compare "$WORK/ddp" "$WORK/killed" 26 50 1e-4 || fail "the resumed run left the uninterrupted one's trajectory"
pass "a killed run resumes exactly"

echo "== 4. finetune, evaluate, generate"
FT=(--task "$WORK/task.yaml" --init "$WORK/gpu32" --train.max_steps=30 --train.batch_size=8 --train.eval_every=30
    --train.save_every=30 --train.seed=5 --train.warmup_steps=3 --train.lr=1e-3)
$PY -m transfergen finetune "${FT[@]}" --out "$WORK/ft_gpu" --train.device=$DEV --train.dtype=fp32 > /dev/null
$PY -m transfergen finetune "${FT[@]}" --out "$WORK/ft_cpu" --train.device=cpu --train.dtype=fp32 > /dev/null
$PY -c "
import json
def v(run): return [json.loads(x)['val_loss'] for x in open(run + '/metrics.jsonl') if 'val_loss' in x][-1]
a, b = v('$WORK/ft_gpu'), v('$WORK/ft_cpu'); print('  val_loss gpu', round(a,4), 'cpu', round(b,4))
assert abs(a - b) < 5e-2" || fail "fine-tuning on the GPU and on the CPU disagree"
$PY -m transfergen evaluate --model "$WORK/ft_gpu" --task "$WORK/task.yaml" --out "$WORK/eval" --device $DEV \
  || fail "evaluate --device $DEV"
[ -s "$WORK/eval/scores.json" ] || fail "evaluate wrote no scores.json"
$PY -m transfergen generate --model "$WORK/gpu16" --prompt "The king" --greedy --max-new-tokens 12 --device $DEV \
  | grep -q "^The king" || fail "generate --device $DEV"
pass "finetune, evaluate and generate run on the GPU"
echo "gpu_check: all PASS ($WORK)"
