# Two commands for a new user: `make run` and `make test`. Both create .venv and
# install what they need on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SHARED ?= ../shared

NATIVE := $(VENV)/.native-stamp

.PHONY: run test lint typecheck unit compat bench bench-e2e clean clean-native native system-deps

# The editable install itself is pure Python; `native` compiles the engine.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	TRAILWARDEN_PURE_PYTHON=1 $(BIN)/pip install --quiet -e '.[manager,speed,dev]'
	touch $@

# The rule engine compiled with mypyc and the agent's C envelope, next to their
# sources (setup.py), rebuilt whenever one of them changes: Python imports the
# extension before the .py, so a stale one would hide an edit (pytest refuses
# to run against one).
$(NATIVE): $(STAMP) setup.py $(wildcard rules/*.py) agent/_envelope.c
	@echo "Compiling the rule engine with mypyc and the agent's envelope (about a minute; again only when rules/*.py or agent/*.c change)"
	@rm -f rules/*.so agent/*.so
	$(BIN)/python setup.py --quiet build_ext --inplace >$(VENV)/native-build.log 2>&1 || \
		{ tail -20 $(VENV)/native-build.log; exit 1; }
	@grep "trailwarden build:" $(VENV)/native-build.log || true
	@# An extension build_ext found up to date is copied with its old time; it
	@# was made from these sources all the same, so date it now (pytest compares).
	@find rules agent -maxdepth 1 -name '*.so' -exec touch {} +
	touch $@

native: $(NATIVE)

# The main job end to end on the bundled sample CloudTrail records: a manager
# and an agent enrolled with it, as processes on loopback; files in var/run-demo.
run: $(NATIVE)
	$(BIN)/trailwarden-manager run-demo --data-dir var/run-demo

test: $(STAMP) system-deps lint typecheck unit

# Servers the tests start themselves (MQTT broker from Debian; the indexer
# comes from PyPI with the dev extra). Installed when missing and running as root.
system-deps:
	@if [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing mosquitto (Debian) for the MQTT tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }; \
	else echo "The MQTT tests need mosquitto: sudo apt-get install mosquitto"; exit 1; fi

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy resolves the trailwarden.* names through a tree of links to the top-level
# folders (the editable install maps them with an import hook mypy cannot see).
typecheck: $(STAMP)
	@mkdir -p .typecheck/trailwarden
	@for d in agent manager common rules; do ln -sfn ../../$$d .typecheck/trailwarden/$$d; done
	MYPYPATH=.typecheck $(BIN)/mypy -p trailwarden.common -p trailwarden.rules \
		-p trailwarden.agent -p trailwarden.manager

unit: $(NATIVE)
	$(BIN)/pytest -q

# Wazuh's own ruleset test suite against the engine; ends with the summary line.
compat: $(NATIVE)
	TRAILWARDEN_SHARED=$(SHARED) $(BIN)/python tests/compat/run_suite.py

bench: $(NATIVE)
	$(BIN)/python bench/engine.py

# CloudTrail files to alerts on disk with agent and manager as processes:
# records/s, and p50/p99 latency at 5,000 records/s offered.
bench-e2e: $(NATIVE)
	$(BIN)/python bench/e2e.py

clean-native:
	rm -f rules/*.so agent/*.so $(NATIVE)

clean: clean-native
	rm -rf $(VENV) .typecheck .mypy_cache .pytest_cache .ruff_cache build *.egg-info
