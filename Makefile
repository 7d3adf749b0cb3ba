# ad-moderation. The two commands: `make run` and `make test`.
# Everything is installed by these rules into git-ignored folders:
#   .venv            app + dev tools (Python 3.11+)
#   .venv-localstack LocalStack in host mode (Python 3.13; created on first use)
#   .venv-checkov    checkov for make check-infra (its pins would downgrade the app's boto3)
#   .local/          embedded PostgreSQL data, LocalStack state, logs

# Bytecode is cached, whatever the shell says: with PYTHONDONTWRITEBYTECODE set (many Docker
# images and CI machines set it) every Python process the suites start (LocalStack, the functions'
# runtimes, chalice local, the aws CLI, checkov) compiled each module it imports from source, every
# time: a fifth of make test's CPU (docs/testing.md#where-the-time-goes). The .pyc files go to the
# git-ignored virtualenvs and __pycache__/ folders; make package compiles its own (infra/bytecode.py).
unexport PYTHONDONTWRITEBYTECODE

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv run test test-unit test-integration test-e2e train lint typecheck bench localstack clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# requirements-dev.lock: every package and version (transitive ones too) that
# requirements-dev.txt resolves to, made by uv (make lock). make venv installs exactly it.
LOCK := requirements-dev.lock
UV   := $(VENV)/bin/uv
# uv itself comes from PyPI with the virtualenv's pip, at the version the lock names.
UV_PIN = $(shell grep -m1 -E '^uv==' $(LOCK))

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(or $(UV_PIN),uv)"

$(STAMP): $(LOCK) pyproject.toml | $(UV)
	# Exactly the lock (pip too: chalice 1.34 runs it, and needs pip<26.3); what is not in it goes.
	$(UV) pip sync --quiet --python $(PY) $(LOCK)
	# The project itself, editable: every folder imports the others by package name.
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

venv: $(STAMP) ## create/refresh the dev virtualenv (from requirements-dev.lock)

.PHONY: lock
lock: | $(UV) ## after a change to requirements*.txt: re-resolve requirements-dev.lock (then make venv)
	$(UV) pip compile --quiet --universal --python-version 3.11 requirements-dev.txt -o $(LOCK)

# The moderator console's browser test (tests/e2e/test_console.py) drives the operating system's
# Chromium with Playwright (docs/testing.md#the-moderator-consoles-browser-test): Debian's package, installed
# here when missing (apt-get, as root); Playwright's own browser download is never used.
CHROMIUM ?= /usr/bin/chromium
.PHONY: chromium
chromium: ## install Debian's Chromium for the console's browser test, if missing (apt-get)
	@test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

localstack: $(STAMP) ## install LocalStack (host mode) into .venv-localstack
	$(PY) -m toolkit.localstack install

run: $(STAMP) ## run the whole service locally, in the foreground (Ctrl-C stops it)
	$(PY) -m devstack.run

# The suites run in parallel (pytest-xdist): TEST_WORKERS processes, each with its own PostgreSQL and
# stacks; a module's tests, and the users of one deployed stack, stay on one worker (tests/conftest.py). TEST_WORKERS=0: one process.
# Four on a 2-core machine: the suites wait on servers a fifth of the time (docs/testing.md#where-the-time-goes).
TEST_WORKERS ?= 4
PYTEST = $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

test: $(STAMP) localstack checkov chromium ## run every test: unit, integration, end-to-end (TEST_WORKERS=4, PYTEST_ARGS=)
	$(PYTEST)

test-unit: $(STAMP) ## unit tests only (no servers)
	$(PYTEST) tests/unit

test-integration: $(STAMP) ## integration tests (embedded Postgres + moto/LocalStack)
	$(PYTEST) tests/integration

test-e2e: $(STAMP) localstack chromium ## end-to-end tests against the running stack
	$(PYTEST) tests/e2e

# Thresholds (training/thresholds.py): block at TARGET_PRECISION, review down to REVIEW_RECALL (none: no band).
TRAIN_ARGS = $(if $(TARGET_PRECISION),--target-precision $(TARGET_PRECISION)) $(if $(REVIEW_RECALL),--review-recall $(REVIEW_RECALL))
# HUMAN_LABELS=1: the moderators' verdicts as labels too (docs/reviews.md#the-loop-feeds-the-model), from
# DATABASE_URL, else make run's database (ops/statements.py names it).
HUMAN_DB = $(shell $(PY) -c "from ops.statements import database_url; print(database_url())")
train: $(STAMP) ## retrain, rewrite chalicelib/artifacts/model.json (TARGET_PRECISION=0.95 REVIEW_RECALL=0.8 HUMAN_LABELS=1)
	$(PY) -m training.train $(TRAIN_ARGS) $(if $(HUMAN_LABELS),--human-labels '$(HUMAN_DB)')

lint: $(STAMP) ## ruff + mypy + the import layers (lint-imports) + bandit on the shipped code
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	# Skips, each with its reason: infra/skipped-checks.md (a unit test keeps pyproject.toml to it).
	$(VENV)/bin/bandit -c pyproject.toml --quiet -r app.py chalicelib

.PHONY: docs
docs: $(STAMP) ## build the documentation site (mkdocs-material, --strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

clean: ## remove local state (database, LocalStack data); keeps the virtualenvs
	rm -rf .local

# Migrations (ops/migrate.py): DATABASE_URL, else make run's embedded PostgreSQL (never started here).
# Adopts an older service's database, or stops before changing anything (docs/operations/migrations.md).
.PHONY: migrate
migrate: $(STAMP) ## apply pending migrations to DATABASE_URL (ARGS=--status: list, change nothing; ARGS="--client NAME": owner of older tasks, default legacy)
	$(PY) -m ops.migrate $(ARGS)

# Statements of reasons (ops/statements.py; docs/reviews.md#exporting-them): DATABASE_URL, else make run's database.
.PHONY: statements
statements: $(STAMP) ## the statements of reasons of blocks since a time, as JSON lines (ARGS="--since 2026-12-01 [--out F] [--all-fields]")
	$(PY) -m ops.statements $(ARGS)

# The DLQ tool (ops/dlq.py). --local: make run's LocalStack and test credentials
# (toolkit/names.py) unless AWS_ENDPOINT_URL is set; `AWS_ENDPOINT_URL= make dlq` means real AWS.
.PHONY: dlq
dlq: $(STAMP) ## list the dead-letter queue (ARGS="show task:42", ARGS="redrive --all")
	$(PY) -m ops.dlq --local $(or $(ARGS),list)

# The model registry (ops/models.py). --local: make run's LocalStack, bucket, database and API
# (AWS_ENDPOINT_URL, EMBEDDED_PG_PORT, PORT as for make run); BUCKET= or STACK= (a deployed stack's
# ModelBucketName output) pick another registry; `AWS_ENDPOINT_URL= ... STACK=...` means AWS.
.PHONY: model-publish model-list model-promote model-rollback model-unset model-compare
MODELS = $(PY) -m ops.models --local $(if $(BUCKET),--bucket '$(BUCKET)') $(if $(STACK),--stack '$(STACK)')
model-publish: $(STAMP) ## train (FAMILY=lr|gbt|hgb; or ARTIFACT=model.json|pipeline.pkl|.joblib) and publish a version (TARGET_PRECISION= REVIEW_RECALL= PROMOTE=)
	$(MODELS) publish $(if $(ARTIFACT),--artifact '$(ARTIFACT)') $(TRAIN_ARGS) $(if $(SEED),--seed $(SEED)) $(if $(FAMILY),--family $(FAMILY)) \
		$(if $(PROMOTE),--promote $(PROMOTE)) $(if $(NOTE),--note '$(NOTE)') $(if $(HUMAN_LABELS),--human-labels)
model-list: $(STAMP) ## the registry: versions, metrics, thresholds, aliases, what the API serves
	$(MODELS) list
model-promote: $(STAMP) ## point ALIAS (default live) at VERSION=...
	$(if $(VERSION),,$(error VERSION= is required: make model-list shows the versions))
	$(MODELS) promote '$(VERSION)' --alias $(or $(ALIAS),live)
model-rollback: $(STAMP) ## ALIAS (default live) back to the version it named before its last promotion
	$(MODELS) rollback --alias $(or $(ALIAS),live)
model-unset: $(STAMP) ## remove ALIAS (e.g. ALIAS=shadow: stop shadow scoring)
	$(if $(ALIAS),,$(error ALIAS= is required))
	$(MODELS) unset '$(ALIAS)'
model-compare: $(STAMP) ## shadow against live over the latest N=500 tasks: a table and build/models/compare-*.png
	$(MODELS) compare $(if $(N),--n $(N))

.PHONY: bench
bench: $(STAMP) localstack ## cold starts, scorer batches, e2e vs raw SQS (ARGS="--quick", "--only cold,batch")
	$(PY) -m measure.bench.run $(ARGS)

# Load test (measure/load/): locust, headless, against `make run`'s API unless URL= is given.
# The deployed API needs its key: make load URL=<api url> API_KEY=<key> ITEMS=1-20 (make run's is read from its state dir).
# The key reaches the tool through the environment, so make does not echo it.
.PHONY: load
load: export LOAD_API_KEY := $(or $(API_KEY),$(LOAD_API_KEY))
# PROFILE=overload: 256 then 1,024 clients, each phase submitting for 30 s, judged against the
# overload goal (docs/performance.md#under-overload-make-load-profileoverload); PHASES=256,1024 DURATION=30 change it.
load: LOAD_ARGS = $(if $(URL),--url '$(URL)') $(if $(USERS),--users $(USERS)) $(if $(SUBMITS),--submits $(SUBMITS)) \
	$(if $(ITEMS),--items '$(ITEMS)') $(if $(OUT),--out '$(OUT)') $(if $(DRAIN),--drain-timeout $(DRAIN)) $(if $(DRAIN_POLL),--drain-poll $(DRAIN_POLL)) \
	$(if $(PROFILE),--profile '$(PROFILE)') $(if $(PHASES),--phases '$(PHASES)') $(if $(DURATION),--duration $(DURATION))
load: $(STAMP) ## load test (locust): URL= API_KEY= USERS=32 SUBMITS=2000 ITEMS=1-300 DRAIN=120 DRAIN_POLL=0.5 OUT=; PROFILE=overload
	$(PY) -m measure.load.run $(LOAD_ARGS)

# --- Deployment artifact (docs/deploy.md) ------------------------------------
# STAGE selects the Chalice stage (.chalice/config.json) and infra/stages.json entry.
STAGE ?= dev
.PHONY: package check-infra enable-partial-batch deploy-localstack deploy-localstack-stop policies

package: $(STAMP) ## build build/package/sam.json + deployment.zip for STAGE (default dev)
	$(PY) -m infra.package --stage $(STAGE)

check-infra: package $(CHECKOV_STAMP) ## package STAGE, then check it: infra/check.py's rules, cfn-lint, checkov
	$(PY) -m infra.check build/package/sam.json
	$(VENV)/bin/cfn-lint build/package/sam.json
	$(PY) -m infra.check --checkov build/package/sam.json

# checkov in a virtualenv of its own, pinned with everything it resolved to (infra/checkov-*.txt).
$(CHECKOV_STAMP): infra/checkov-requirements.txt infra/checkov-constraints.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(CHECKOV_VENV)
	$(UV) pip install --quiet --python $(CHECKOV_VENV)/bin/python -r infra/checkov-requirements.txt -c infra/checkov-constraints.txt
	@touch $@

.PHONY: checkov
checkov: $(CHECKOV_STAMP) ## install checkov (pinned) into .venv-checkov

enable-partial-batch: $(STAMP) ## after `chalice deploy --stage STAGE`: ReportBatchItemFailures etc. on the scoring ESM
	$(PY) -m infra.enable_partial_batch --stage $(STAGE)

# Its own LocalStack (127.0.0.1:4567, DEPLOY_LOCALSTACK_ENDPOINT) and Postgres (54330, DEPLOY_PG_PORT), never make run's
# 4566/54329: the deployed event source mapping would consume make run's queue.
deploy-localstack: $(STAMP) ## package + deploy the stack to its own LocalStack (:4567, host mode, no Docker) + Postgres
	$(PY) -m infra.deploy_localstack --stage $(STAGE)

deploy-localstack-stop: $(STAMP) ## stop the LocalStack and Postgres that deploy-localstack started
	$(PY) -m infra.deploy_localstack stop

policies: $(STAMP) ## regenerate the IAM policy files .chalice/policy-*.json (infra/policies.py)
	$(PY) -m infra.policies

# One API key per client (ops/api_keys.py). --local: make deploy-localstack's LocalStack unless
# AWS_ENDPOINT_URL is set (`AWS_ENDPOINT_URL= make api-key ...` means AWS); ARGS="--make-run ..." for make run's keys.
.PHONY: api-key
api-key: $(STAMP) ## keys per client: ARGS="create <client> [--scope submit,close,moderate,admin --rate R --burst B --quota N --period DAY]", "list", "revoke <client>"
	$(PY) -m ops.api_keys --local --stage $(STAGE) $(or $(ARGS),list)
