# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench setup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch present on these machines; installed first so no range pulls CUDA builds.
	$(VPY) -m pip install --quiet torch==2.13.0
	$(VPY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(VPY) -m bayes_crl.demo --out runs/demo

test: $(STAMP)
	MPLBACKEND=Agg $(VPY) -m pytest -q

test-slow: $(STAMP)
	MPLBACKEND=Agg $(VPY) -m pytest -q -m slow

bench: $(STAMP)
	MPLBACKEND=Agg $(VPY) benchmarks/recovery.py --workers 2 --out benchmarks/results/recovery_default.md

clean:
	rm -rf $(VENV) runs .pytest_cache
