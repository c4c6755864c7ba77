# The front door. Every target installs the pinned environment first (a no-op when it is current).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install manifest demo demo-s3 test ui bench clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-virtualenv -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import duckdb, dagster, dagster_dbt, great_expectations, healthlake"
	touch $(STAMP)

# The dbt manifest is built here, at build time, not when Dagster imports the definitions.
manifest: $(STAMP)
	$(BIN)/healthlake dbt-parse

# The demo parses the manifest itself when it is missing or older than the dbt project's files: in
# the background, while the city is generated and the run's modules are imported.
demo: install
	$(BIN)/healthlake demo

# The same demo on the production topology: SeaweedFS (S3) and PostgreSQL started on loopback for
# the run and stopped by PID afterwards (docs/deployment.md); the lake lives as long as the run.
demo-s3: install manifest
	$(BIN)/python -m healthlake.servers demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

ui: install manifest
	$(BIN)/healthlake ui

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf .healthlake
