#!/usr/bin/env bash
# RL on the real model with prompts that have headroom (docs/ppo.md, "On the real model"): SmolLM2-135M-
# Instruct, reward non_toxic, RealToxicityPrompts prompts whose base continuations are the most toxic.
# Settings are chosen on the validation split; every run reports its held-out reward paired with the base
# in stage.json (metrics.eval_reward_change). One thread per run, as measured:
#   OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 bash recipes/smollm2-135m-instruct/rl-headroom.sh [OUT] [RUN...]
# Needs SAFEALIGN_DATA_DIR; OUT defaults to runs/rl-headroom; RUN names the runs below (default: all
# training runs). rtp-NAME scores run NAME's model (rtp-base: the starting model) with the toxicity suite
# on every held-out RealToxicityPrompts prompt (eval-rtp-toxicity.yaml) into OUT/eval-rtp/NAME, rtpval-NAME
# on the validation prompts into OUT/eval-rtp-val/NAME, keep-NAME the retention suites (perplexity,
# HellaSwag, TruthfulQA) into OUT/eval-keep/NAME, keepval-NAME the same suites on another draw of their
# items (sampling seed 1; for choosing settings) into OUT/eval-keep-val/NAME; compare them with the base,
# paired by item, with `safealign compare --out DIR base=OUT/eval-rtp/base ppo=OUT/eval-rtp/NAME ...`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/rl-headroom}"
shift || true
sa="${SAFEALIGN:-safealign}"
data="$out/data/prompts-rtp"
mkdir -p "$out"
# RealToxicityPrompts only, 20% test and 20% validation groups (the validation side chooses settings).
[ -d "$data" ] || $sa data build prompts --source rtp --max-words 40 --val-fraction 0.2 --out "$data"
# BOLD's Wikipedia sentence starts: neutral prompts whose reference continuations anchor PPO-ptx runs
anchor="$out/data/prompts-bold"
[ -d "$anchor" ] || $sa data build prompts --source bold --out "$anchor"

train() {  # algorithm name overrides...: the algorithm's headroom recipe, resumable
  local algo=$1 name=$2 cache="$out/headroom.json"; shift 2
  # the base scores depend on how prompts are rendered: raw continuations keep their own cache
  [[ " $* " == *" --chat_template false "* ]] && cache="$out/headroom-raw.json"
  [ -f "$out/$name/model/config.json" ] || $sa train "$algo" --config "$here/$algo-headroom.yaml" \
    --dataset "$data" --headroom_cache "$cache" --output_dir "$out/$name" --resume "$@"
}

# name -> algorithm and overrides of its recipe
declare -A runs=(
  [ppo-lr2e-5]="ppo --learning_rate 2e-5 --max_steps 28 --save_steps 7"
  [ppo-lr3e-5-24]="ppo --learning_rate 3e-5 --max_steps 24 --save_steps 6"
  [ppo-test-s0]="ppo --eval_split test --seed 0"
  [ppo-test-s1]="ppo --eval_split test --seed 1"
  [ppo-test-s2]="ppo --eval_split test --seed 2"
  [grpo-headroom]="grpo --seed 0"
  [rloo-headroom]="rloo --seed 0"
)
for seed in 0 1 2; do  # the method comparison on the test split (docs/ppo.md): same prompts and budget
  runs[grpo-test-s$seed]="grpo --eval_split test --seed $seed"
  runs[rloo-test-s$seed]="rloo --eval_split test --seed $seed"
  # PPO on raw continuations (no chat template), as RealToxicityPrompts and the toxicity suite sample
  runs[ppo-raw-test-s$seed]="ppo --chat_template false --eval_split test --seed $seed"
done
runs[ppo-raw-val]="ppo --chat_template false"
# the learning rate of raw-continuation PPO, validation only (docs/ppo.md), then the chosen one on test
for lr in 6e-5 1e-4; do runs[ppo-raw-val-lr$lr]="ppo --chat_template false --learning_rate $lr"; done
# a binding KL penalty at the largest learning rate (the recipe's 0.05 costs about 0.2 of a reward sd)
for kl in 0.2 0.5; do runs[ppo-raw-val-lr1e-4-kl$kl]="ppo --chat_template false --learning_rate 1e-4 --kl_coef $kl"; done
# PPO-ptx: the reference's continuations of BOLD prompts hold ordinary language modelling in place
for ptx in 1 4; do
  runs[ppo-raw-val-lr1e-4-ptx$ptx]="ppo --chat_template false --learning_rate 1e-4 --ptx_coef $ptx --ptx_dataset $anchor"
done
# LoRA on every linear layer (rank 16), saved merged, at learning rates about ten times full fine-tuning's
for lr in 5e-4 1e-3; do
  runs[ppo-raw-val-lora-lr$lr]="ppo --chat_template false --adapter lora --merge_adapter true --learning_rate $lr"
done
# the setting chosen on validation (docs/ppo.md, "PPO-ptx"), on the test split with three seeds
for seed in 0 1 2; do
  runs[ppo-raw-lr1e-4-ptx1-test-s$seed]="ppo --chat_template false --learning_rate 1e-4 --ptx_coef 1 --ptx_dataset $anchor --eval_split test --seed $seed"
done

# the 15-minute budget: 16 iterations instead of 24 at a larger step, sampling selection, evaluation and
# the anchor in batches of 128 (docs/ppo.md, "Within the budget"); chosen on validation, then on test
for lr in 1.25e-4 1.5e-4; do
  fast="ppo --chat_template false --learning_rate $lr --max_steps 16 --save_steps 4 --ptx_coef 1 --ptx_dataset $anchor --per_device_eval_batch_size 128"
  runs[ppo-raw-val-16-lr$lr-ptx1]="$fast"
  for seed in 0 1 2; do runs[ppo-raw-16-lr$lr-ptx1-test-s$seed]="$fast --eval_split test --seed $seed"; done
done
# the anchor doubled at the larger step: perplexity and HellaSwag held closer on every seed?
runs[ppo-raw-val-16-lr1.5e-4-ptx2]="ppo --chat_template false --learning_rate 1.5e-4 --max_steps 16 --save_steps 4 --ptx_coef 2 --ptx_dataset $anchor --per_device_eval_batch_size 128"

rtp() {  # split run (or base): the toxicity suite's expected max toxicity on the split's RTP prompts
  local split=$1 name=$2 model="$out/$2/model" dest="$out/eval-rtp/$2" flags=(--test-fraction 0.2)
  [ "$name" = base ] && model=smollm2-135m-instruct
  [ "$split" = validation ] && dest="$out/eval-rtp-val/$name" flags+=(--split validation --val-fraction 0.2)
  [ -f "$dest/results.json" ] || $sa eval --model "$model" --preset "$here/eval-rtp-toxicity.yaml" \
    "${flags[@]}" --out "$dest"
}

keep() {  # draw run (or base): the retention suites at the default pipeline's sizes (docs/metrics.md);
  # draw "test" reports, "validation" samples other items of the same benchmarks to choose settings on
  local name=$2 model="$out/$2/model" dest="$out/eval-keep/$2" seed=0
  [ "$name" = base ] && model=smollm2-135m-instruct
  [ "$1" = validation ] && dest="$out/eval-keep-val/$name" seed=1
  [ -f "$dest/results.json" ] || $sa eval --model "$model" --preset pipeline --seed "$seed" \
    --suites perplexity hellaswag truthfulqa_mc --test-fraction 0.2 --out "$dest"
}

for name in "${@:-${!runs[@]}}"; do
  case $name in
    rtp-*) rtp heldout "${name#rtp-}"; continue ;;
    rtpval-*) rtp validation "${name#rtpval-}"; continue ;;
    keep-*) keep test "${name#keep-}"; continue ;;
    keepval-*) keep validation "${name#keepval-}"; continue ;;
  esac
  # shellcheck disable=SC2086
  train ${runs[$name]%% *} "$name" ${runs[$name]#* }
done
