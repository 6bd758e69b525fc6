#!/usr/bin/env bash
# How radgen's shipped default model (radgen/assets/default_model) is made, end to end.
# Needs the IU X-Ray reports at $IU (default ../shared/data/iu_xray_reports; no images needed).
# CPU: about 2.2 s per step of 8 studies on a quiet 2-core machine; see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
IU="${IU:-../shared/data/iu_xray_reports}"
WORK="${WORK:-work/default-model}"
EPOCHS="${EPOCHS:-2}"
mkdir -p "$WORK"
R=.venv/bin/radgen
# 1. Reports + MeSH labels in the annotation.json split (2,285 / 302 / 290), R2Gen report = findings.
#    Steps 1-2 are skipped when their output exists (delete $WORK to redo them).
[ -f "$WORK/iu.jsonl" ] || $R data prepare --format iu-xray-r2gen --root "$IU" --out "$WORK/iu.jsonl"
# 2. IU-Phantom radiographs (PA + lateral, 512 px) for every study.
[ -f "$WORK/phantom/manifest.jsonl" ] || $R data phantom --manifest "$WORK/iu.jsonl" --out "$WORK/phantom" --seed 0
# 2b. The training studies rendered four more times (seeds 1-4: other patients and finding placements,
#     the same labels), for the finding head's fits only (steps 3c and 3d; the decoder trains on step 2's renders).
for SEED in 1 2 3 4; do
  [ -f "$WORK/phantom_train_seed$SEED/manifest.jsonl" ] || $R data phantom --manifest "$WORK/iu.jsonl" --split train \
    --out "$WORK/phantom_train_seed$SEED" --seed $SEED
done
# 3. Train radgen-small (finding head + connector + LoRA; frozen encoder features cached, PA and
#    lateral). The head learns the phantom's labels (labels.chexpert) from both views; its thresholds
#    are tuned on the val split at every evaluation; the prompt gives the study's indication (80% of
#    studies) and names its true findings during training (radgen/models/{findings,generator}.py).
$R train radgen-small "data.manifest=$WORK/phantom/manifest.jsonl" "stages.0.epochs=$EPOCHS" \
  train.warmup_steps=50 train.warmup_ratio=0 train.eval_every=60 train.eval_max_batches=10 \
  train.eval_generate=0 train.save_every=60 train.early_stopping_patience=4 train.log_every=5 \
  "train.feature_cache_dir=$WORK/feature_cache" --output-dir "$WORK/run"
# 3b. Class-balanced fine-tuning: training studies with key findings repeated 3x, 320 more steps from
#     the best weights, so the decoder follows the findings in its prompt (the normal template no
#     longer dominates the loss; scripts/oversample_findings.py says why).
.venv/bin/python scripts/oversample_findings.py "$WORK/phantom/manifest.jsonl" "$WORK/phantom/manifest_balanced.jsonl" --times 3
$R train radgen-small "data.manifest=$WORK/phantom/manifest_balanced.jsonl" stages.0.max_steps=320 \
  "train.init_from=$WORK/run/best" train.warmup_steps=20 train.warmup_ratio=0 train.eval_every=80 train.eval_max_batches=10 \
  train.eval_generate=0 train.save_every=80 train.early_stopping_patience=4 train.log_every=5 \
  "train.feature_cache_dir=$WORK/feature_cache" generate.guide_margin=5 generate.guide_pool=40 generate.min_new_tokens=45 --output-dir "$WORK/run2"
# 3c. Fit the finding head alone, from seed 1, with its own trainable copy of the encoder's last two
#     blocks, reading the images at 320 px (the decoder's encoder keeps 224), on cached trunk maps
#     (about 45 min on 2 cores; the decoder and its frozen encoder are untouched); the per-observation
#     thresholds are tuned on the val split (radgen/train/finding_head.py; why 320 px: docs/benchmarks.md,
#     "Grounding", "A finding head at 320 px"). It trains on the three renders of every training study
#     (step 2b; why: docs/benchmarks.md, "Grounding", "Three renders of each training study"), 8 epochs.
$R fit-findings "$WORK/run2/best" --data "$WORK/phantom/manifest.jsonl" --feature-cache-dir "$WORK/feature_cache" \
  --tune-encoder-blocks 2 --image-size 320 --members 1 --seed 1 --max-epochs 8 --patience 2 \
  --extra-train "$WORK/phantom_train_seed1/manifest.jsonl" "$WORK/phantom_train_seed2/manifest.jsonl"
# 3d. A second member, the same recipe fitted on five renders of every training study (seeds 0-4), kept
#     beside step 3c's head; the two heads' logits are averaged (model.findings.member_mean: logit) and
#     the thresholds re-tuned on val for that mean (why: docs/benchmarks.md, "Grounding", "Two heads,
#     their logits averaged"; about 48 min, most of it the fit).
$R fit-findings "$WORK/run2/best" --data "$WORK/phantom/manifest.jsonl" --feature-cache-dir "$WORK/feature_cache" \
  --add-members 1 --seed 1 --max-epochs 8 --patience 2 \
  --extra-train "$WORK"/phantom_train_seed{1,2,3,4}/manifest.jsonl
# 4. Export only the trained weights (two finding heads + connector + LoRA adapter, about 48 MB) with the model card.
$R model export "$WORK/run2" --out radgen/assets/default_model --card radgen/assets/default_model/model_card.json   # the card is read before the folder is replaced
# 4b. Store the training split's reports, keyed by indication, for retrieval-guided greedy decoding
#     (generate.guide_margin; radgen/models/memory.py): verbatim IU text, CC BY-NC-ND 4.0.
$R model memory radgen/assets/default_model --data "$WORK/phantom/manifest.jsonl" --split train
# 5. Seed drafted greedy decoding with the model's own default (guided) reports on the validation split
#    (speed; in fp32 the text does not depend on the draft table; radgen.models.speculative).
$R generate --model radgen/assets/default_model --data "$WORK/phantom/manifest.jsonl" --split val --greedy \
  --out "$WORK/val_greedy.jsonl" --overwrite
.venv/bin/python -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; \
open(sys.argv[2], 'w').write(''.join(r['findings'].strip() + '\n' for r in rows if r['findings'].strip()))" \
  "$WORK/val_greedy.jsonl" radgen/assets/default_model/draft_reports.txt
# 6. Record the decoder's activation ranges on 32 training studies, so `--dtype int8` smooths them
#    into the weights before quantizing (radgen/models/int8.py; without them int8 text degrades).
$R model calibrate-int8 radgen/assets/default_model --data "$WORK/phantom/manifest.jsonl" --split train --limit 32
