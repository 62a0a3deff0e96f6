# sav-assets: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sav-installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export SAV_DATA_ROOT ?= $(CURDIR)/data
DEMO_SOURCE ?= $(CURDIR)/demo_source

.PHONY: setup sysdeps instance demo demo-loop test bench dev lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# torch first (wheels on this machine's disk), then sam2 built against it (no isolation, no CUDA ext)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation sam2==1.1.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# the ray extra (lib/cluster, tests/scale): the tests need it, the demo does not
RAY_STAMP := $(VENV)/.sav-ray-installed
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $(RAY_STAMP)

# System packages the tests need, from Debian (CI runs `make test` as root on a fresh machine):
# PostgreSQL's server (tests/test_postgres_instance.py), Chromium (the headless-browser test, driven
# by pip's playwright through executable_path: never `playwright install`) and iproute2 (`ip`: the Ray
# cluster tests bring loopback up in a private network namespace). Nothing to do, and no apt,
# when all are there; `make demo` never needs them. Without apt-get it only warns (CI=true: fails).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
sysdeps:
	@if { command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl; } >/dev/null 2>&1 && command -v chromium >/dev/null && command -v ip >/dev/null; then \
	  echo "sysdeps: postgresql, chromium and iproute2 already installed"; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql chromium iproute2; \
	else \
	  echo "sysdeps: no apt-get here: install PostgreSQL's server, Chromium and iproute2 yourself" >&2; \
	  test "$${CI:-}" != true; \
	fi

# The Dagster instance: $(DAGSTER_HOME)/dagster.yaml, written only when missing (yours to edit afterwards),
# by `sav-assets init-home`: the `gpu` pool (the masklets step) runs one step at a time; then its storage
# is created once, under a lock, before anything concurrent opens it (dagster#27390).
# DAGSTER_PG_URL=postgresql://user@host:port/db: a PostgreSQL instance instead of SQLite files.
instance: $(STAMP)
	$(BIN)/sav-assets init-home $(if $(DAGSTER_PG_URL),--postgres-url '$(DAGSTER_PG_URL)')

demo: $(STAMP) instance
	$(BIN)/sav-assets demo --out $(DEMO_SOURCE)
	$(BIN)/sav-assets run --source $(DEMO_SOURCE) --root $(SAV_DATA_ROOT) --config configs/demo.yaml
	$(BIN)/sav-assets sql --root $(SAV_DATA_ROOT) "select status, count(*) as videos from videos group by 1 order by 1"

# label -> train -> evaluate -> promote -> relabel on the demo lake (after `make demo`); prints J&F before/after
demo-loop: $(STAMP) instance
	$(BIN)/sav-assets run --source $(DEMO_SOURCE) --root $(SAV_DATA_ROOT) --select sam2_finetune,model_evaluation --config configs/demo_loop.yaml
	$(BIN)/sav-assets sql --root $(SAV_DATA_ROOT) "select sha256, steps, promoted, json_extract(metrics_json, '$$.val_jf_current') as jf_before, json_extract(metrics_json, '$$.val_jf') as jf_after from models order by created_at"
	# relabel every labeled batch with the promoted model (a plain run only takes newly landed videos);
	# the previous model's labels are kept beside them (label_sets, all_masklets)
	for b in $$($(BIN)/sav-assets sql --root $(SAV_DATA_ROOT) --format csv "select distinct batch_id from label_runs order by 1" | tail -n +2 | tr -d '"'); do \
	  $(BIN)/sav-assets run --source $(DEMO_SOURCE) --root $(SAV_DATA_ROOT) --config configs/demo.yaml --batch $$b || exit 1; \
	done
	$(BIN)/sav-assets sql --root $(SAV_DATA_ROOT) "select video_id, model_name, left(checkpoint_sha256, 12) as checkpoint, current, auto_masklets from label_sets order by video_id, current"

test: $(STAMP) $(RAY_STAMP) sysdeps instance
	$(BIN)/python -m pytest -q tests

# SAVSCALE: fraction of SA-V's size for the SQL tables (docs/benchmarks.md uses 1.0: 5 GB, ~3 min to write)
SAVSCALE ?= 0.1
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_labeling.py --smoke
	$(BIN)/python benchmarks/gen_savscale.py --out bench_data/savscale --scale $(SAVSCALE) --baseline
	$(BIN)/python benchmarks/bench_sql.py --root bench_data/savscale
	$(BIN)/python benchmarks/bench_shards.py

dev: $(STAMP) instance
	$(BIN)/dagster dev -w workspace.yaml

lint: $(STAMP)
	$(BIN)/ruff check sav_assets tests benchmarks definitions.py setup.py
	$(BIN)/dg check defs

clean:
	rm -rf data demo_source .dagster_home bench_data
