# The README's two commands: `make demo` (the main job) and `make test`.
# Each creates .venv and installs everything it needs when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml Makefile scripts/install_azurite.sh scripts/install_perf_tools.sh scripts/install_deploy_tools.sh scripts/install_vllm.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[export,serve,azure,bench,gateway,deploy,dev]" --config-settings editable_mode=strict
	bash scripts/install_azurite.sh
	bash scripts/install_perf_tools.sh
	bash scripts/install_deploy_tools.sh
	bash scripts/install_vllm.sh
	touch $@

# Strict editable installs link each file: re-link so new modules are seen (about 3 s).
setup: $(STAMP)
	@$(BIN)/python -m pip install -q --no-deps -e . --config-settings editable_mode=strict 2>/dev/null

demo: setup
	$(BIN)/tritonkit demo --workdir $(OUT) $(if $(ENGINE),--engine $(ENGINE))

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p tritonkit

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build $(OUT) .pytest_cache .mypy_cache .ruff_cache
