# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Lambda runtime's Python (python3.12): pyenv's build when present, else any python3.12.
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
UV_VERSION := 0.13.8
VENV := .venv
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
AWSCLI_VENV := .venv-awscli
LAMBDA_VENV := .venv-lambda
BIN := $(VENV)/bin
export SAM_CLI_TELEMETRY := 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install cli demo test lint unit integration e2e bench build clean iam-report

help:
	@echo "make demo   - set everything up and run a DEV deployment in the embedded sandbox"
	@echo "make test   - set everything up and run every test and static check"
	@echo "make lint   - static checks only;  make build - sam build;  make clean"

$(BIN)/uv:
	@test -n "$(PYTHON)" || { echo "python3.12 not found (install it, e.g. pyenv install 3.12)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(BIN)/uv requirements-dev.lock pyproject.toml
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

$(SAM_VENV)/.installed: $(BIN)/uv requirements-sam.lock
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(BIN)/uv pip sync --quiet --python $(SAM_VENV)/bin/python requirements-sam.lock
	@touch $@

# checkov pins its own tree (boto3, pydantic, ...): a venv of its own, like the SAM CLI's.
$(CHECKOV_VENV)/.installed: $(BIN)/uv requirements-checkov.lock
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(BIN)/uv pip sync --quiet --python $(CHECKOV_VENV)/bin/python requirements-checkov.lock
	@touch $@

# The AWS CLI v1, for bench/runbook_cli.py (the runbook's commands as written): a venv of its own,
# so its pins never touch ours. Bytecode compiled at install, as pip does: with PYTHONDONTWRITEBYTECODE
# (exported above) every `aws` call would otherwise recompile its sources.
$(AWSCLI_VENV)/.installed: $(BIN)/uv requirements-awscli.lock
	test -x $(AWSCLI_VENV)/bin/python || $(PYTHON) -m venv $(AWSCLI_VENV)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(AWSCLI_VENV)/bin/python requirements-awscli.lock
	@touch $@

# The functions' runtime environment: every sandbox worker runs on it (sandbox/lambda_runtime.py). The layer's
# requirements and nothing else, at the versions `make build` puts in the layer (requirements-lambda.lock), for
# this machine's architecture, bytecode compiled as `make build` compiles the layer. uv's venv has no pip either.
# sandbox-only/ is what only the sandbox's worker needs, the simulated clock's time-machine (the dev lock's pin):
# outside site-packages, appended to a worker's sys.path after the layer's, and only when the clock is simulated.
$(LAMBDA_VENV)/.installed: $(BIN)/uv requirements-lambda.lock requirements-dev.lock
	test -x $(LAMBDA_VENV)/bin/python || $(BIN)/uv venv --quiet --clear --python $(PYTHON) $(LAMBDA_VENV)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(LAMBDA_VENV)/bin/python requirements-lambda.lock
	rm -rf $(LAMBDA_VENV)/sandbox-only
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(LAMBDA_VENV)/bin/python --no-deps \
		--target $(LAMBDA_VENV)/sandbox-only "$$(grep '^time-machine==' requirements-dev.lock)"
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

install: $(VENV)/.installed $(LAMBDA_VENV)/.installed $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed node_modules/.installed

# What CI's deploy workflow needs: the deployer CLI and its dependencies, nothing else.
cli: $(VENV)/.installed

demo: $(VENV)/.installed $(LAMBDA_VENV)/.installed
	$(BIN)/python -m sandbox.demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml target-account/*.yaml
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml -f template.yaml $(addprefix -f ,$(wildcard target-account/*.yaml))
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml --framework github_actions -d .github/workflows
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml --region af-south-1
	$(BIN)/python -m scripts.check_asl
	$(BIN)/python -m scripts.check_workflows
	$(BIN)/python -m scripts.check_policies
	$(BIN)/deptry --config deptry.toml functions layers/deployer/deployer

unit: $(VENV)/.installed $(LAMBDA_VENV)/.installed
	$(BIN)/pytest tests/unit -q

# Unit tests use moto in-process, which resets the backends a sandbox serves: separate runs.
test: install lint build
	$(BIN)/pytest tests/unit -q
	$(BIN)/pytest tests/integration tests/e2e -q -n 2 --dist loadfile

bench: $(VENV)/.installed $(LAMBDA_VENV)/.installed $(AWSCLI_VENV)/.installed
	$(BIN)/python -m bench.run

# The least-privilege report (docs/iam.md): every sandbox suite with IAM's decisions recorded, then per role
# what was used and every grant nothing used (each needs a reason in docs/iam-grants.yaml, or removal).
iam-report: $(VENV)/.installed $(LAMBDA_VENV)/.installed
	rm -rf .sandbox/iam-usage
	BBWS_IAM_USAGE_DIR=.sandbox/iam-usage $(BIN)/pytest tests/integration tests/e2e -q -n 2 --dist loadfile
	$(BIN)/python -m scripts.iam_report .sandbox/iam-usage

# The layer must carry the deployer package and arm64 wheels (Architectures: arm64).
# pip resolves requirements.txt under requirements-lambda.lock: the layer holds exactly the runtime environment's
# versions (the arm64 builds of them), the ones every sandbox test ran.
build: $(SAM_VENV)/.installed requirements-lambda.lock
	PIP_CONSTRAINT="$(CURDIR)/requirements-lambda.lock" PATH="$(dir $(PYTHON)):$$PATH" \
		$(SAM_VENV)/bin/sam build --template template.yaml
	# Lambda's /opt and /var/task are read-only: without bytecode in the package, every cold start
	# compiles the layer (botocore included) from source. Hash-checked, since zips keep no mtimes.
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode checked-hash .aws-sam/build
	test -f .aws-sam/build/DeployerLayer/python/deployer/pipeline.py
	test -f .aws-sam/build/DeployerLayer/python/deployer/guardrails.yaml
	ls .aws-sam/build/DeployerLayer/python/pydantic_core/ | grep -q aarch64
	test -f .aws-sam/build/DeployerLayer/python/deployer/__pycache__/pipeline.cpython-312.pyc

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(AWSCLI_VENV) $(LAMBDA_VENV) node_modules .aws-sam .pytest_cache .mypy_cache .ruff_cache
