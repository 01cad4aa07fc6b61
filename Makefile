# pipecat-gateway: `make dev` runs everything locally, `make test` runs the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck bench deploy clean

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## Local stack: moto server + Pipecat Cloud emulator + infra into moto + chalice local + SQS poller
dev: $(STAMP)
	$(PY) -m infra.local_stack

## The whole suite: lint, types, unit / integration / e2e / infrastructure tests
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@# pytest exits 5 when it collects no test: that is a failure here, never a silent pass.
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.run_all

## Real AWS: data stack (CloudFormation via boto3) then the Chalice app. STAGE=dev|prod
STAGE ?= dev
deploy: $(STAMP)
	$(PY) -m infra.deploy --stage $(STAGE)
	$(VENV)/bin/chalice deploy --stage $(STAGE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
