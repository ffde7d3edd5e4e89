#!/usr/bin/env bash
# Reproduce samples/demo-model/, the model `make demo` starts from, with dsita's own pipeline, in two stages:
#   1. `dsita synth`: 4,500 clips of espeak-ng and festival speech with --variety (seed 347), none of them a
#      sentence of the bundled sample (--exclude), so the demo's dev and test sentences are never trained on;
#      `dsita run --steps import,train`: a Conformer-CTC (MODEL_SIZE=small, 4.5 M parameters) from scratch;
#   2. `dsita synth` again: 9,000 clips (seed 437: other sentences in part, other voices), and training
#      continued on them from stage 1's best checkpoint, slimmed as below (TRANSFER_LEARNING=1, every layer
#      kept);
#   then tools/slim_checkpoint.py: stage 2's best_dev.pt without the optimizer state, weights in float16.
#
#   bash tools/train_demo_model.sh [WORK_DIR]        # default data/demo-model-train
#
# Resumable: after a kill, the same command skips the finished steps and training resumes from last.pt (a
# corpus is rewritten only when its sources/it.tar.gz is missing). See samples/demo-model/README.md for what
# it cost and measured.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${1:-data/demo-model-train}
OUT=samples/demo-model
VENV=.venv/bin

# Seeds 347 (4,500 clips) and 437 (9,000) keep every espeak-ng variant that speaks the sample's dev and test
# splits (Jacky, m4; Lee, Mike) out of their training splits: the demo's test voices are variants the model
# never heard (festival has two voices only: those differ by rate, pitch and formant). The seeds were picked
# for that alone, before any training.
corpus() { # corpus FOLDER CLIPS SEED
  mkdir -p "$1/sources"
  if [ ! -f "$1/sources/it.tar.gz" ]; then
    "$VENV/dsita" synth --clips "$2" --max-words 12 --seed "$3" --variety --workers 2 \
      --exclude samples/it-sample.tar.gz --out "$1/sources/it.tar.gz"
  fi
}

export MODEL=conformer MODEL_SIZE=small LR_SCHEDULE=warmup-decay BATCH_SIZE=16 EARLY_STOP=1 ES_EPOCHS=3 \
  AUGMENT=0 TRAIN_WORKERS=1 CHECKPOINT_SECS=300 SEED=1

corpus "$WORK/stage1" 4500 347
# One thread: stage 1 was measured so, beside other work on a shared 2-core machine.
OMP_NUM_THREADS=1 DATA_DIR="$WORK/stage1" LEARNING_RATE=5e-4 LR_WARMUP_STEPS=500 EPOCHS=8 \
  "$VENV/dsita" run --steps import,train

"$VENV/python" tools/slim_checkpoint.py "$WORK/stage1/checkpoints/best_dev.pt" "$WORK/stage1/slim/best_dev.pt"
corpus "$WORK/stage2" 9000 437
OMP_NUM_THREADS=2 DATA_DIR="$WORK/stage2" LEARNING_RATE=3e-4 LR_WARMUP_STEPS=300 EPOCHS=2 \
  TRANSFER_LEARNING=1 TRANSFER_CHECKPOINT_DIR="$WORK/stage1/slim" DROP_SOURCE_LAYERS=0 \
  "$VENV/dsita" run --steps import,train

"$VENV/python" tools/slim_checkpoint.py "$WORK/stage2/checkpoints/best_dev.pt" "$OUT/best_dev.pt"
