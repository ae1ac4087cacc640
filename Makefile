# The two commands a new user needs: `make demo` and `make test`.
# Each creates the virtual environment and installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# pytest workers: the machine has 2 cores; override with `make test JOBS=1`.
JOBS   ?= 2
OUT    ?= ufm-demo

.PHONY: demo test install install-test derivations clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ufm needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/ufm demo --out $(OUT)

test: install-test
	$(PY) -m pytest -n $(JOBS) -q

derivations: install
	for f in derivations/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
