# Two entry points from a fresh clone: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CORES ?= 2

I2D := .venv-img2dataset

.PHONY: install bench-env demo test test-fast mutants lint clean

# torch and torchvision first and pinned exactly: these builds lie on the machine's disk,
# any other version downloads several GB.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# img2dataset, the baseline of `gpic bench fetch`, in its own venv: it pins pandas below
# what the project uses and pulls wandb and OpenCV.
$(I2D)/.installed:
	python3 -m venv $(I2D)
	$(I2D)/bin/pip install -q img2dataset
	touch $@

bench-env: $(I2D)/.installed

resources/models/tiny/.built: $(VENV)/.installed src/gpic/devkit/tiny_models.py
	$(BIN)/gpic models tiny resources/models/tiny
	touch $@

resources/demo/.built: $(VENV)/.installed
	$(BIN)/gpic demo resources/demo
	touch $@

demo: resources/models/tiny/.built resources/demo/.built
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/gpic summary
	$(BIN)/gpic verify

test: $(VENV)/.installed $(I2D)/.installed
	$(BIN)/pytest -q

# The edit loop: every test not marked slow (nothing that runs Snakemake, SLURM or a browser).
test-fast: $(VENV)/.installed $(I2D)/.installed
	$(BIN)/pytest -q -m "not slow"

# Plants known bugs one at a time (gpic.devkit.mutants) and lists those the fast tests miss;
# about 10 minutes, not part of `make test`.
mutants: $(VENV)/.installed $(I2D)/.installed
	$(PY) -m gpic.devkit.mutants

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/lint-imports
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results .snakemake
