# pipecat-gateway: `make dev` runs everything locally, `make test` runs the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test processes: the suite waits on servers more than it computes, so 4 beat the machine's 2 cores.
PYTEST_WORKERS ?= 4

DEMO := infra/demo
DEMO_BUILT := $(DEMO)/dist/demo.js

.PHONY: dev test test-suites lint typecheck bench deploy destroy secret region clean demo prereqs-dev prereqs-test

## What the machine must have (Python >= 3.11 with venv, node/npm, Chromium for the browser test), checked
## first, each missing piece named with its fix.
prereqs-dev:
	@python3 infra/prereqs.py dev
prereqs-test:
	@python3 infra/prereqs.py test

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## The browser demo (@pipecat-ai/client-js bundled with esbuild) and its test driver (playwright-core)
$(DEMO_BUILT): $(DEMO)/package.json $(DEMO)/package-lock.json $(DEMO)/src/demo.js
	cd $(DEMO) && npm ci --no-audit --no-fund && npm run build

demo: $(DEMO_BUILT)

## Local stack: moto server + Pipecat Cloud emulator + infra into moto + chalice local + SQS poller + demo page
dev: prereqs-dev
	@$(MAKE) --no-print-directory $(STAMP) $(DEMO_BUILT)
	$(PY) -m infra.local_stack

## The whole suite: lint, types, unit / integration / e2e (incl. headless Chromium, schemathesis) / infrastructure
test: prereqs-test
	@$(MAKE) --no-print-directory $(STAMP) $(DEMO_BUILT)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@$(MAKE) --no-print-directory test-suites

## The test phases alone (make test runs them after lint and types)
test-suites:
	@# pytest exits 5 when it collects no test: that is a failure here, never a silent pass.
	@# PYTEST_WORKERS processes (pytest-xdist), each with its own moto, emulator and stack; a file stays on one.
	@# Then the load tests marked `alone`, with the machine to themselves: they run whatever the first phase
	@# gave (one red test never hides another), and the target fails if either phase did.
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not alone"; first=$$?; \
	  $(PY) -m pytest -m alone; alone=$$?; \
	  if [ $$first -eq 5 ]; then echo "no tests were collected" >&2; first=1; fi; \
	  if [ $$alone -eq 5 ]; then echo "no load test was collected" >&2; alone=1; fi; \
	  echo "make test: parallel phase exit $$first, alone phase exit $$alone"; \
	  [ $$first -eq 0 ] && [ $$alone -eq 0 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.run_all

## Real AWS: data stack (CloudFormation via boto3), the Chalice app (with bytecode), then API stage throttling, all
## in REGION (default: AWS_REGION, then AWS_DEFAULT_REGION; one must be set). STAGE=dev|prod;
## DEPLOY_ARGS e.g. "--env OIDC_ISSUER=https://... --env OIDC_AUDIENCE=... --alarm-email you@x"
STAGE ?= dev
DEPLOY_ARGS ?=
REGION ?= $(or $(AWS_REGION),$(AWS_DEFAULT_REGION))
AWS_IN_REGION = AWS_REGION=$(REGION) AWS_DEFAULT_REGION=$(REGION)

region:
	@if [ -z "$(REGION)" ]; then echo "set REGION (e.g. make $(MAKECMDGOALS) REGION=eu-west-1) or AWS_REGION:" \
	  "every part of the stage must land in one region" >&2; exit 2; fi

deploy: region $(STAMP)
	$(AWS_IN_REGION) $(PY) -m infra.deploy --stage $(STAGE) --region $(REGION) $(DEPLOY_ARGS)
	$(AWS_IN_REGION) $(PY) -m infra.chalice_cli deploy --stage $(STAGE)
	$(AWS_IN_REGION) $(PY) -m infra.api_guard_rails --stage $(STAGE) --region $(REGION)

## Set some keys of the stage's secret, keeping the others: a JSON object on standard input (never on the command line)
secret: region $(STAMP)
	@$(AWS_IN_REGION) $(PY) -m infra.secret --stage $(STAGE) --region $(REGION)

## Remove the stage: the Chalice app, then the secret and the data stack; DELETE_DATA=1 also the retained table
DELETE_DATA ?=
destroy: region $(STAMP)
	@if [ -f .chalice/deployed/$(STAGE).json ]; then \
	  $(AWS_IN_REGION) $(PY) -m infra.chalice_cli delete --stage $(STAGE); fi
	$(AWS_IN_REGION) $(PY) -m infra.destroy --stage $(STAGE) --region $(REGION) $(if $(DELETE_DATA),--delete-data)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DEMO)/node_modules $(DEMO)/dist
