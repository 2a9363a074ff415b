# plauder: `make run` starts a server, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,calls]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/plauder serve

# Every test on the embedded SQLite, then everything that touches storage again on
# PostgreSQL + Redis (the tests start both themselves; `.ci/run` installs them). Not rerun:
# the CLI tests (the command line, whose storage paths the others cover), the calls and
# TURN tests (no storage of their own), and the SDK media tests (their storage paths are
# test_media_server.py's, which is rerun).
BACKEND_TESTS := tests/integration tests/unit/test_server_services.py tests/unit/test_feed.py \
	--ignore=tests/integration/test_cli.py --ignore=tests/integration/test_groups_cli.py \
	--ignore=tests/integration/test_media_cli.py --ignore=tests/integration/test_calls_cli.py \
	--ignore=tests/integration/test_calls.py --ignore=tests/integration/test_turn.py \
	--ignore=tests/integration/test_media.py

# The two passes run side by side (their tests mostly wait on servers and disks): the
# PostgreSQL pass writes to .test-postgres.log, printed after the SQLite pass's own output.
test: $(STAMP)
	@PLAUDER_TEST_BACKEND=postgres $(BIN)/pytest -q -p no:cacheprovider $(BACKEND_TESTS) \
		>.test-postgres.log 2>&1 & pg=$$!; \
	echo "== SQLite pass (PostgreSQL + Redis pass beside it)"; \
	$(BIN)/pytest -q; sqlite=$$?; \
	wait $$pg; postgres=$$?; \
	echo "== PostgreSQL + Redis pass"; cat .test-postgres.log; \
	echo "== SQLite: exit $$sqlite, PostgreSQL + Redis: exit $$postgres"; \
	test $$sqlite -eq 0 -a $$postgres -eq 0

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build dist src/*.egg-info
