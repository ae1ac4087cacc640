# The two commands a new user needs: `make demo` and `make test`.
# Each creates the virtual environment and installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# pytest workers: the machine has 2 cores; override with `make test JOBS=1`.
JOBS   ?= 2
OUT    ?= ufm-demo

.PHONY: demo test test-fast install install-test install-docs docs docs-clean browser derivations clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ufm needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -e '.[test]'
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed pyproject.toml
	$(PIP) install -e '.[docs]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-docs: $(VENV)/.installed-docs

demo: install
	$(VENV)/bin/ufm demo --out $(OUT)

# The suite includes the documentation: the site is built first (gallery executed, warnings are
# errors) and tests/test_docs_site.py opens it in headless Chromium.
test: install-test docs browser
	$(PY) -m pytest -n $(JOBS) -q

# The everyday loop: the suite without the tests marked slow (training, fitting, sympy derivations,
# child processes, the docs site); under a minute with numba's cache warm. CI runs `make test`.
test-fast: install-test
	$(PY) -m pytest -n $(JOBS) -q -m "not slow"

# -- documentation ---------------------------------------------------------------------------
# `make docs` builds docs/_build/html. MathJax comes from the npm registry's `mathjax` package and
# is served from the build (no CDN at build or view time). One Sphinx process (-j 1): 2 cores.
MATHJAX_VERSION := 3.2.2
MATHJAX := docs/_static/mathjax/tex-chtml.js
SPHINXOPTS ?= -W --keep-going -j 1 -q

$(MATHJAX):
	@command -v npm >/dev/null || { echo "make docs: npm is needed to fetch MathJax (Debian: apt-get install npm)"; exit 1; }
	rm -rf docs/_build/npm docs/_static/mathjax
	mkdir -p docs/_build/npm docs/_static/mathjax
	cd docs/_build/npm && npm pack --silent mathjax@$(MATHJAX_VERSION) > /dev/null
	tar -xzf docs/_build/npm/mathjax-$(MATHJAX_VERSION).tgz -C docs/_build/npm
	cp -r docs/_build/npm/package/es5/. docs/_static/mathjax/
	cp docs/_build/npm/package/LICENSE docs/_static/mathjax/
	rm -rf docs/_build/npm

docs: install-docs $(MATHJAX)
	rm -rf docs/api/generated    # regenerated each build: no stub outlives a removed function
	NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg \
	  $(PY) -m sphinx -b html $(SPHINXOPTS) docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

docs-clean:
	rm -rf docs/_build docs/api/generated docs/auto_examples docs/sg_execution_times.rst docs/_static/mathjax

# Headless Chromium and its driver (Debian packages) for tests/test_docs_site.py.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium > /dev/null && command -v chromedriver > /dev/null; then :; else \
	  echo "installing chromium and chromium-driver (Debian packages) for the browser test"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver > /dev/null; \
	fi

derivations: install
	for f in derivations/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean: docs-clean
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
