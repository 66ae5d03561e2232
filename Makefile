# Sen — make targets. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVICES := ehr teleconsult billing portal
INFRA := deploy/local/infra.sh
export SEN_DEV_JWT_KEY ?= $(CURDIR)/.sen/dev-jwt.pem

.PHONY: help venv assets run facility-check test test-fast bench token lint translations infra-up infra-down infra-status indexes seed clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: constraints.txt requirements-dev.txt shared/pyproject.toml $(foreach s,$(SERVICES),services/$(s)/pyproject.toml)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) >&2
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt \
		-e ./shared $(foreach s,$(SERVICES),-e ./services/$(s)) >&2
	@touch $@

venv: $(VENV)/.installed ## create the virtualenv and install every package (pinned)

PORTAL_ASSETS := services/portal/node_modules/.installed
$(PORTAL_ASSETS): services/portal/package.json services/portal/package-lock.json
	@bash $(INFRA) packages
	@cd services/portal && npm ci --no-audit --no-fund --loglevel=error >&2
	@touch $@

assets: $(PORTAL_ASSETS) ## install the portal's front-end packages (htmx, Chart.js, axe-core) from npm with `npm ci`

run: venv assets ## start FerretDB, RabbitMQ and every service; seed a demo province; Ctrl-C stops all
	@bash deploy/local/run.sh

facility-check: venv ## say what each service will see of one facility of the province file, or what to fix: make facility-check FACILITY=<id>
	@$(PY) deploy/local/facility.py check $(or $(SEN_PROVINCE),deploy/local/demo-province.json) $(FACILITY)

# Sen's own packages are installed editable, so pip compiled none of them; where PYTHONDONTWRITEBYTECODE is set
# (CI machines) Python never writes their bytecode either, and each of the processes a run starts (over a hundred)
# compiled them from source again (0.25 s for all four apps). Compiled once here (0.5 s), as the image does.
SOURCES := shared/src $(foreach s,$(SERVICES),services/$(s)/src)

test: venv assets ## run the whole suite against real FerretDB and RabbitMQ (started when needed)
	@bash $(INFRA) up
	@bash tools/fhir/fetch-examples.sh >&2
	@$(PY) -m compileall -q $(SOURCES) >/dev/null
	@set -a; eval "$$(bash $(INFRA) env)"; set +a; \
		$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv ## unit tests only (no servers)
	@$(PY) -m pytest shared/tests services -m "not integration" $(PYTEST_ARGS)

bench: venv assets ## run the benchmarks in tests/perf and print their tables
	@bash $(INFRA) up
	@$(PY) -m compileall -q $(SOURCES) >/dev/null
	@set -a; eval "$$(bash $(INFRA) env)"; set +a; \
		$(PY) -m pytest tests/perf -s -p no:randomly $(PYTEST_ARGS)

token: venv ## print a development bearer token: make token ROLE=doctor
	@$(PY) -m sen_shared.devtoken $(or $(ROLE),admin) $(TOKEN_ARGS)

lint: venv ## ruff over everything
	@$(VENV)/bin/ruff check .

translations: venv ## the portal's catalog: extract its messages, update the Vietnamese .po (translate what it adds), compile the .mo
	@$(PY) -m sen_portal.catalog

infra-up: ## start (installing if needed) PostgreSQL + FerretDB and RabbitMQ
	@bash $(INFRA) up

infra-down: ## stop the local servers
	@bash $(INFRA) down

infra-status: ## say which local servers answer
	@bash $(INFRA) status

indexes: venv ## create every service's MongoDB indexes
	@set -a; eval "$$(bash $(INFRA) env)"; set +a; \
		for s in $(SERVICES); do $(PY) -m sen_$$s.indexes; done; \
		bash $(INFRA) tune $$(for s in $(SERVICES); do echo "$${SEN_DB:-sen_$$s}"; done | sort -u)

clean: infra-down ## stop the servers and remove the virtualenv and local data
	rm -rf $(VENV) .sen
