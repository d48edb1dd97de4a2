# `make demo`: synthesise a small BraTS-like dataset, prepare it, train on it (CPU is enough),
# then segment 5 new held-out cases, score them and draw them.
# `make test`: the test suite's fast tier; `make test-slow`: the slow tier (several processes,
# signals); `make lint`: ruff and mypy. CI runs all three. Each target creates .venv and
# installs the package first.
# PYTHON: the interpreter that creates $(VENV); pip then takes the newest jax that setup.cfg
# allows for it (CONTRIBUTING.md, "Tested versions").
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
DEMO := demo_out

.PHONY: demo test test-slow lint clean

# The CUDA plugin that matches the installed jax, for the tests that compile for NVIDIA GPUs
# this machine does not have (deviceless), goes into its own folder: installed beside jax,
# every CPU command would try CUDA at start and print its failure.
GPU_AOT_PLUGIN = import importlib.metadata as m; print(min(r.split(";")[0] for r in \
  m.requires("jax") if r.startswith("jax-cuda12-plugin") and "cuda12-local" in r))

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# A registry page that arrives cut short fails pip at random (seen once in CI): try 3 times.
	for attempt in 1 2 3; do \
	  $(PY) -m pip install -q -e ".[test,lint]" \
	    && $(PY) -m pip install -q --no-deps jax2onnx==0.17.1 \
	    && $(PY) -m pip install -q --upgrade --target $(VENV)/gpu-aot \
	         "$$($(PY) -c '$(GPU_AOT_PLUGIN)')" && exit 0; \
	  echo "pip install failed (attempt $$attempt of 3), retrying in 20 s"; sleep 20; \
	done; exit 1
	touch $@

$(DEMO)/raw/.complete: $(VENV)/.installed
	$(VENV)/bin/brats-jax-synth --output=$(DEMO)/raw --layout=brats2021 --num_cases=24 --shape=64,64,48 --seed=0
	touch $@

$(DEMO)/heldout/.complete: $(VENV)/.installed
	$(VENV)/bin/brats-jax-synth --output=$(DEMO)/heldout --layout=brats2021 --num_cases=5 --shape=64,64,48 --seed=1
	touch $@

$(DEMO)/store/manifest.json: $(DEMO)/raw/.complete
	$(VENV)/bin/brats-jax-prepare --input=$(DEMO)/raw --output=$(DEMO)/store --overwrite

demo: $(DEMO)/store/manifest.json $(DEMO)/heldout/.complete
	$(VENV)/bin/brats-jax-train --config=configs/demo.py --workdir=$(DEMO)/workdir \
	  --config.data.store=$(DEMO)/store
	$(VENV)/bin/brats-jax-predict --workdir=$(DEMO)/workdir --input=$(DEMO)/heldout \
	  --output=$(DEMO)/predictions --checkpoint=best
	$(VENV)/bin/brats-jax-evaluate --predictions=$(DEMO)/predictions \
	  --references=$(DEMO)/heldout --output=$(DEMO)/heldout_scores.csv --pictures=$(DEMO)/pictures
	@echo "pictures: $(DEMO)/pictures/*.png, $(DEMO)/workdir/training_curves.png"

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 -m "not slow" tests

test-slow: $(VENV)/.installed
	$(PY) -m pytest -n 2 -m slow tests

# Style, import order and the import graph (ruff), types where they are declared (mypy).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy brats_jax/config brats_jax/workdir brats_jax/data

clean:
	rm -rf $(DEMO)
