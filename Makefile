# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install serve clean

$(BIN)/convnext: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/convnext

demo: install
	$(BIN)/convnext train

serve: install  # the latest demo run, with heat maps from stage 1 (its 32² input has a 1x1 last map)
	@run=$$(ls -td runs/convnext_atto-* 2>/dev/null | head -1); \
	if [ -z "$$run" ]; then echo "make serve: no demo run in runs/; run make demo first" >&2; exit 2; fi; \
	$(BIN)/convnext serve --weights "$$run" --cam-stage 1

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
