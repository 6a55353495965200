#!/usr/bin/env bash
# The default-recipe search (docs/recipes.md, "How the default recipe was chosen"), end to end:
# candidates trained on the train groups, compared on the validation split, the chosen one scored once
# on the test split with three training seeds. Needs SAFEALIGN_DATA_DIR; about 3 CPU-hours on 2 cores.
# Usage: bash recipes/smollm2-135m-instruct/search/search.sh [OUT_DIR]   (default: runs/recipe-search)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/recipe-search}"
sa="${SAFEALIGN:-safealign}"
split=(--val-fraction 0.1)
mkdir -p "$out"

for strategy in parity less_over_more; do
  [ -d "$out/data/$strategy" ] || $sa data build preference --source crows_pairs --strategy "$strategy" \
    "${split[@]}" --out "$out/data/$strategy"
done

train() {  # name dataset args...
  local name=$1 data=$2; shift 2
  [ -d "$out/runs/$name/model" ] || $sa train dpo --config "$here/dpo.yaml" --dataset "$out/data/$data" \
    --output_dir "$out/runs/$name" "$@"
}
screen() {  # name model split
  [ -f "$out/eval/$3/$1/results.json" ] || $sa eval --model "$2" --preset "$here/${4:-screen}.yaml" \
    --split "$3" "${split[@]}" --out "$out/eval/$3/$1"
}

train parity-b1 parity --beta 1.0 --max_steps 80
train lom-1e-5 less_over_more --learning_rate 1e-5 --max_steps 80
train lom-2e-5 less_over_more --learning_rate 2e-5 --max_steps 80
train lom-5e-5 less_over_more --learning_rate 5e-5 --max_steps 80
screen base smollm2-135m-instruct validation
for run in parity-b1 lom-1e-5 lom-2e-5 lom-5e-5; do
  screen "$run-40" "$out/runs/$run/checkpoints/checkpoint-40" validation
  screen "$run-80" "$out/runs/$run/model" validation
done
$sa compare base="$out/eval/validation/base" \
  $(for r in parity-b1 lom-1e-5 lom-2e-5 lom-5e-5; do for s in 40 80; do
      echo "${r//./_}-$s=$out/eval/validation/$r-$s"; done; done) --out "$out/validation-report"

# The chosen recipe (lom-2e-5, 80 steps, as in pipeline.yaml), three training seeds, scored once on test.
train lom-2e-5-s1 less_over_more --learning_rate 2e-5 --max_steps 80 --seed 1
train lom-2e-5-s2 less_over_more --learning_rate 2e-5 --max_steps 80 --seed 2
screen base smollm2-135m-instruct heldout test
screen seed0 "$out/runs/lom-2e-5/model" heldout test
for s in 1 2; do  # the bias suites and perplexity on the same test items, for the spread over seeds
  [ -f "$out/eval/heldout/seed$s/results.json" ] || $sa eval --model "$out/runs/lom-2e-5-s$s/model" \
    --preset "$here/test.yaml" --suites crows_pairs,stereoset,perplexity --split heldout "${split[@]}" \
    --out "$out/eval/heldout/seed$s"
done
$sa compare base="$out/eval/heldout/base" seed0="$out/eval/heldout/seed0" seed1="$out/eval/heldout/seed1" \
  seed2="$out/eval/heldout/seed2" --out "$out/test-report"
