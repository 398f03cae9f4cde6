#!/bin/bash
EXP=${EXP:-runs/frontier}
# pre_pairs.sh OUT TASKYAML STEPS BS [flags]: "pretrain" by fine-tuning from scratch on pseudo pairs (loss on all)
. .venv/bin/activate 2>/dev/null || true
OUT=$1; T=$2; S=$3; B=$4; shift 4
transfergen finetune --init scratch --task $T --tokenizer.path ${EXP}/pre_lm --model.preset tiny --model.max_seq_len 128 --out $OUT --train.max_steps=$S --train.batch_size=$B --train.lr=3e-3 --train.warmup_steps=20 --train.schedule=cosine --train.eval_every=$S --train.eval_batches=8 --train.save_every=$S --train.threads=1 "$@" > $OUT.log 2>&1 || { echo FAIL $OUT; tail -3 $OUT.log; }
