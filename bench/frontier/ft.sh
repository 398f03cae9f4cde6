#!/bin/bash
EXP=${EXP:-runs/frontier}
# ft.sh PRE OUT [extra finetune flags]: fine-tune full on headlines (1000 pairs, 200 steps) and evaluate 500 test items
. .venv/bin/activate 2>/dev/null || true
PRE=$1; OUT=$2; shift 2
transfergen finetune --init $PRE --task ${TASK:-${EXP}/headlines.yaml} --out $OUT --train.max_examples=1000 --train.max_steps=200 --train.batch_size=16 --train.lr=3e-3 --train.warmup_steps=15 --train.schedule=cosine --train.eval_every=100 --train.eval_batches=6 --train.save_every=200 --train.threads=1 "$@" > $OUT.ft.log 2>&1 || { echo FAIL; tail -3 $OUT.ft.log; exit 1; }
OMP_NUM_THREADS=1 transfergen evaluate --model $OUT --task ${TASK:-${EXP}/headlines.yaml} --split test --limit 500 --out $OUT/test --eval.max_new_tokens=${MAXNEW:-20} > /dev/null 2>&1
python "$(dirname "$0")/about.py" $OUT/test
