# ccdf: `make help` lists the targets. Everything installs into the active Python environment.
PYTHON ?= python3
# A matched torch/torchvision pair, installed only when none is importable (an existing torch,
# e.g. your own CUDA build, is kept). Override for your platform: make install TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := .install.stamp

.DEFAULT_GOAL := help
.PHONY: help install demo test test-e2e test-full smoke lint format clean clean-outputs

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch, torchvision, torchvision.ops" >/dev/null 2>&1; then \
	  echo "keeping the installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	else \
	  $(PYTHON) -m pip install $(TORCH_SPEC); \
	fi
	$(PYTHON) -m pip install -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## Install ccdf and its dependencies (keeps an existing torch)

demo: $(STAMP) ## Run the embedded default: 70%-missing-pixel inpainting of 4 FFHQ faces, CPU, offline
	$(PYTHON) run.py task=inpaint sampler.t0=0.1

# pytest exits 5 when no test was selected: make stops on any non-zero status, so an empty selection fails.
test: $(STAMP) ## Run the fast test suite (no end-to-end, slow or GPU tests); fails if no test runs
	$(PYTHON) -m pytest -m "not e2e and not slow and not gpu" -q

test-e2e: $(STAMP) ## Run the end-to-end tests (python run.py subprocesses, full pipelines); fails if none runs
	$(PYTHON) -m pytest tests -m "e2e and not slow and not gpu" -q

test-full: $(STAMP) ## Run every test, slow ones included
	$(PYTHON) -m pytest -q

smoke: $(STAMP) ## A seconds-long end-to-end run (2 small images)
	$(PYTHON) run.py task=inpaint sampler.t0=0.1 debug=smoke

lint: $(STAMP) ## ruff lint and format check
	$(PYTHON) -m ruff check ccdf tests run.py
	$(PYTHON) -m ruff format --check ccdf tests run.py

format: $(STAMP) ## ruff format and autofix
	$(PYTHON) -m ruff format ccdf tests run.py
	$(PYTHON) -m ruff check --fix ccdf tests run.py

clean: ## Remove caches and the install stamp
	rm -rf .pytest_cache .ruff_cache $(STAMP) build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-outputs: ## Remove everything under outputs/ (runs and sweeps)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
