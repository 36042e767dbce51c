# qwen-audio-mt: every job a target; `make help` lists them.
# Setup is idempotent: the venv is rebuilt only when pyproject.toml changes (stamp file).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
DATA_ROOT ?= ../shared/data
export QWEN_AUDIO_MT_DATA ?= $(abspath $(DATA_ROOT))
export HF_HUB_OFFLINE := 1
PYTEST_ARGS ?=
# pytest-xdist workers for make test / test-fast: 2 on 2 cores, the long learning check first
# beside the rest (tests/conftest.py); TEST_WORKERS=0 runs in one process
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup sysdeps test test-fast shards chat-shards pretrain sft eval sweep bench notebooks clean

help: ## list every target with one line each
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 14

setup: sysdeps $(STAMP) ## build .venv and install torch, the package and its dependencies (idempotent)

sysdeps: ## apt-get install espeak-ng and sox when missing (needs root)
	@if command -v espeak-ng >/dev/null && command -v sox >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing espeak-ng sox (apt)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null) \
	    || echo "warning: apt-get could not install espeak-ng/sox; the speech corpus tasks will be skipped"; \
	else echo "warning: espeak-ng/sox missing and not root: install them to build the speech tasks"; fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

test: setup ## run the whole test suite (pytest), the slow learning check included (~16 minutes on 2 cores)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: setup ## the suite without the slow learning check
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

test-slow: setup ## the slow learning check only (a 1,000-step CPU training run on 3 tasks, ~6 minutes)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

SHARDS := shards/embedded

shards: setup ## build (or resume) the embedded multitask corpus into shards/embedded
	$(PY) -m qwen_audio_mt corpus build --out $(SHARDS)

ARGS ?=
# Hydra overrides appended to every training target after ARGS, e.g. a site's paths or, in the
# tests, a shrunken model: OVERRIDES="paths.shards=/data/shards" make sweep
OVERRIDES ?=

pretrain: setup shards ## train the tiny default on the embedded corpus, then evaluate (ARGS=hydra overrides)
	$(PY) -m qwen_audio_mt.train $(ARGS) $(OVERRIDES)

CHAT := shards/chat
CHAT_SAMPLE := $(QWEN_AUDIO_MT_DATA)/qwen_audio/sft_sample.txt

chat-shards: setup shards ## build (or resume) the SFT conversations into shards/chat
	@if [ -f "$(CHAT_SAMPLE)" ]; then extra="--chatml $(CHAT_SAMPLE)"; \
	else echo "note: $(CHAT_SAMPLE) not found (shared data missing): the Qwen-Audio-Chat sample is left out"; fi; \
	$(PY) -m qwen_audio_mt shards chat --from $(SHARDS) $$extra --out $(CHAT)

sft: setup chat-shards ## chat SFT from the newest make pretrain export, then SFT vs pretrained on held-out conversations (ARGS=overrides)
	$(PY) -m qwen_audio_mt.train experiment=sft $(ARGS) $(OVERRIDES)

eval: setup ## evaluate an export folder or checkpoint: make eval ARGS="model=outputs/train/RUN/export"
	$(PY) -m qwen_audio_mt.eval $(ARGS)

SWEEP_DIR ?= outputs/multirun/$(shell date +%Y-%m-%d_%H-%M-%S)

sweep: setup ## after make shards: a multirun (default sweep=mixtures, ~22 min), then its report: make sweep ARGS="sweep=temperature"
	@dir=$(SWEEP_DIR); \
	$(PY) -m qwen_audio_mt.train -m $(or $(ARGS),sweep=mixtures) $(OVERRIDES) hydra.sweep.dir=$$dir; status=$$?; \
	$(PY) -m qwen_audio_mt sweep-report $$dir || status=$$((status ? status : $$?)); exit $$status

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

bench: setup shards $(BENCH_STAMP) ## run the benchmarks (lhotse installed for one comparison row); writes bench/results.json and the README table
	$(PY) bench/bench_render.py
	$(PY) bench/bench_shards.py
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_packing.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_generate.py

notebooks: setup ## execute notebooks/ (copies with outputs in outputs/notebooks/); ARGS="--tiny 03 04"
	$(PY) -m qwen_audio_mt notebooks $(ARGS)

clean: ## remove the venv and caches (keeps shards/)
	rm -rf $(VENV) .pytest_cache *.egg-info
