# The few commands everyone runs. Everything installs itself on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-all lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(VENV)/bin/dfml chain install
	touch $@

# The JupyterLab side panel: npm + @jupyter/builder into decentralml_jupyter/labextension/
# (gitignored), linked into the venv so a rebuild shows after a browser reload. The editable
# install's build hook may have built it already; then only newer sources rebuild it.
LABEXT := decentralml_jupyter/labextension/package.json
LABEXT_SRC := labextension/package.json labextension/tsconfig.json \
	$(wildcard labextension/src/*.ts labextension/style/*)
VENV_PATH = PATH="$(abspath $(VENV))/bin:$$PATH"

setup: $(VENV)/.installed $(LABEXT)
	@test -L $(VENV)/share/jupyter/labextensions/decentralml-jupyter || \
		$(VENV_PATH) $(VENV)/bin/jupyter-builder develop --overwrite .
	@# the browser tests drive Debian's Chromium; the across-hosts test makes network
	@# namespaces (iproute2) and drops packets with nftables: install them where we may (root)
	@if { ! command -v chromium || ! command -v nft || ! command -v ip; } >/dev/null 2>&1 && \
		[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium, iproute2 and nftables for the tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium iproute2 nftables >/dev/null) || echo "apt-get failed: see above"; \
	fi

$(LABEXT): $(LABEXT_SRC) | $(VENV)/.installed
	cd labextension && npm install --no-audit --no-fund --loglevel=error
	cd labextension && $(VENV_PATH) npm run build:prod
	touch $@

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

.PHONY: docs
docs: setup
	$(PY) -m sphinx -W --keep-going -b html docs out/docs
	@echo "the site: out/docs/index.html"

bench: setup
	$(PY) benchmarks/bench_load_ext.py
	$(PY) benchmarks/bench_session.py
	$(PY) benchmarks/bench_from_block.py
	$(PY) benchmarks/bench_learning.py
	$(PY) benchmarks/bench_chain.py
	$(PY) benchmarks/bench_protocol.py
	$(PY) benchmarks/bench_storage.py
	$(PY) benchmarks/bench_put_many.py
	$(PY) benchmarks/bench_batching.py
	$(PY) benchmarks/bench_model_size.py
	$(PY) benchmarks/bench_rounds.py --workers 10,50
	$(PY) benchmarks/bench_big_model.py
	$(PY) benchmarks/bench_clients.py --clients 10,1000
	@# TensorFlow Federated runs in its own environment (scripts/tff-env.sh); skipped without it
	if [ -x .tff-venv/bin/python ]; then $(PY) benchmarks/bench_tff.py; \
	else echo "bench_tff: no .tff-venv (scripts/tff-env.sh), skipped"; fi

clean:
	rm -rf $(VENV) out .pytest_cache
