# vlmwatch — every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The app targets python3.12 (the Lambda runtime); pyenv's 3.12 is used when it is not on PATH.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	$$p -c 'import sys' >/dev/null 2>&1 && { command -v $$p || echo $$p; break; }; done)
# SAM CLI pins boto3/cfn-lint versions that clash with the app's: it gets its own virtualenv.
PYTHON_SAM ?= $(shell for p in python3.11 python3; do command -v $$p >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
SAM_VENV := .venv-sam
# checkov pins its own dependency tree too: a third virtualenv.
CHECKOV_VENV := .venv-checkov
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || { echo "python3.12 not found (pyenv install 3.12 or put it on PATH)"; exit 1; }
	@echo "first run: creating $(VENV) and installing vlmwatch with its dev dependencies (about 2 minutes, once)"
	$(PYTHON312) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

$(SAM_VENV)/.installed:
	@echo "installing the SAM CLI and cfn-lint into $(SAM_VENV) (about a minute, once)"
	$(PYTHON_SAM) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0 cfn-lint==1.58.0 cfn-lint-serverless==0.3.6
	touch $@

$(CHECKOV_VENV)/.installed:
	@echo "installing checkov into $(CHECKOV_VENV) (about a minute, once)"
	$(PYTHON_SAM) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov==3.3.30
	touch $@

venv: $(VENV)/.installed ## create .venv with the app and dev dependencies

demo: $(VENV)/.installed ## run the whole pipeline locally (moto server + VLM Run emulator) on the sample files
	$(VENV)/bin/python -m vlmwatch_local demo $(ARGS)

up: $(VENV)/.installed ## keep a local stack running for the vlmwatch CLI (writes .vlmwatch.env: export VLMWATCH_STACK=$$PWD/.vlmwatch.env)
	$(VENV)/bin/python -m vlmwatch_local up $(ARGS)

# Most of the suite's wall time is tests waiting on (compressed) real time, not CPU: 3 workers on 2 cores
# finish sooner than 2. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3

test: $(VENV)/.installed ## run the test suite (unit + end-to-end on the local stack), TEST_WORKERS=3 processes
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --maxschedchunk 1 $(ARGS)

lint: $(VENV)/.installed lint-template lint-security ## ruff + template checks + checkov
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/vlmwatch/vlmwatch cli/vlmwatch_cli

lint-template: $(SAM_VENV)/.installed ## sam validate --lint, and cfn-lint (serverless rules) in every mode
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml
	$(SAM_VENV)/bin/cfn-lint template.yaml -a cfn_lint_serverless.rules
	for mode in schedule stepfunctions; do for hook in false true; do \
	  echo "cfn-lint PollingMode=$$mode EnableWebhook=$$hook"; \
	  $(SAM_VENV)/bin/cfn-lint template.yaml --parameters PollingMode=$$mode EnableWebhook=$$hook \
	    -a cfn_lint_serverless.rules || exit 1; done; done
	SAM=$(SAM_VENV)/bin/sam ./scripts/guided-deploy-defaults.sh

lint-security: $(CHECKOV_VENV)/.installed ## checkov on the template, all four PollingMode x EnableWebhook combinations, KmsKeyArn unset and set
	CHECKOV=$(CHECKOV_VENV)/bin/checkov ./scripts/checkov-all-modes.sh

build: $(SAM_VENV)/.installed ## sam build (needs python3.12 on PATH, which this provides)
	PATH="$(dir $(PYTHON312)):$$PATH" $(SAM_VENV)/bin/sam build

coldstart: $(VENV)/.installed ## median handler import times beside a baseline, and the built layer's size
	$(VENV)/bin/python -m vlmwatch_local coldstart $(ARGS)

perf: $(VENV)/.installed ## requests, latency and AWS cost per mode side by side; rewrites docs/PERFORMANCE.md
	$(VENV)/bin/python -m vlmwatch_local perf --write $(ARGS)

bench: $(VENV)/.installed ## load benchmark on the local stack (not in CI; prints numbers)
	$(VENV)/bin/python -m vlmwatch_local bench $(ARGS)

chaos: $(VENV)/.installed ## fault harness: 1,000 files under faults, invariants checked (ARGS="--files 200 --webhook --outage 30")
	$(VENV)/bin/python -m vlmwatch_local chaos $(ARGS)

drain: $(VENV)/.installed ## a 100-file drop at RequestsPerMinute=10 in virtual time: requests per file, rate used, time vs floor
	$(VENV)/bin/python -m vlmwatch_local drain $(ARGS)

scale: $(VENV)/.installed ## 1k/10k/100k files in flight in virtual time: longest poller run, hottest rows, $ per 1,000 docs (about 25 min)
	$(VENV)/bin/python -m vlmwatch_local scale $(ARGS)

clean: ## remove virtualenvs, build output, demo output and the local stack's env file
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam demo-output .vlmwatch.env

.PHONY: help venv demo up coldstart perf test lint lint-template lint-security build bench chaos drain scale clean
