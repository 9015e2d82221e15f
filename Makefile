# Two entry points from a fresh clone: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: install demo test lint clean

# torch and torchvision first and pinned exactly: these builds lie on the machine's disk,
# any other version downloads several GB.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

resources/models/tiny/.built: $(VENV)/.installed
	$(BIN)/gpic models tiny resources/models/tiny
	touch $@

resources/demo/.built: $(VENV)/.installed
	$(BIN)/gpic demo resources/demo
	touch $@

demo: resources/models/tiny/.built resources/demo/.built
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/gpic summary
	$(BIN)/gpic verify

test: $(VENV)/.installed
	$(BIN)/pytest -q

lint: $(VENV)/.installed
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results .snakemake
