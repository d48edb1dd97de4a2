# `make demo`: synthesise a small BraTS-like dataset, prepare it, train on it (CPU is enough).
# `make test`: the test suite. Both create .venv and install the package first.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO := demo_out

.PHONY: demo test clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

$(DEMO)/raw/.complete: $(VENV)/.installed
	$(VENV)/bin/brats-jax-synth --output=$(DEMO)/raw --layout=brats2021 --num_cases=24 --shape=64,64,48 --seed=0
	touch $@

$(DEMO)/store/manifest.json: $(DEMO)/raw/.complete
	$(VENV)/bin/brats-jax-prepare --input=$(DEMO)/raw --output=$(DEMO)/store --overwrite

demo: $(DEMO)/store/manifest.json
	$(VENV)/bin/brats-jax-train --config=configs/demo.py --workdir=$(DEMO)/workdir \
	  --config.data.store=$(DEMO)/store

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 tests

clean:
	rm -rf $(DEMO)
