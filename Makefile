# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-avx2 install serve clean

$(BIN)/convnext: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/convnext

# LiteRT's converter pins older typing-extensions, pydantic and anyio than the server takes (pyproject's
# tflite extra): it gets an environment of its own, which tests/test_edge_export.py converts in.
TFLITE_VENV := .venv-tflite
$(TFLITE_VENV)/bin/litert-torch-ready: pyproject.toml
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/pip install -q --upgrade pip
	$(TFLITE_VENV)/bin/pip install -q -e ".[tflite]"
	touch $@

demo: install
	$(BIN)/convnext train

serve: install  # the latest demo run, with heat maps from stage 1 (its 32² input has a 1x1 last map)
	@run=$$(ls -td runs/convnext_atto-* 2>/dev/null | head -1); \
	if [ -z "$$run" ]; then echo "make serve: no demo run in runs/; run make demo first" >&2; exit 2; fi; \
	$(BIN)/convnext serve --weights "$$run" --cam-stage 1

# The kernel, parity and graph-capture tests again as an AVX2-only CPU (AMD Zen 3, laptops) runs them:
# PyTorch and oneDNN held to AVX2, the CPU-feature checks answering as there (tests/conftest.py). Only
# where PyTorch runs AVX-512 kernels: on an AVX2-only or ARM CPU the main run already was that run.
AVX2_TESTS := tests/test_kernels.py tests/test_speed_paths.py tests/test_parity.py tests/test_graph_capture.py

test: install $(TFLITE_VENV)/bin/litert-torch-ready
	CONVNEXT_TFLITE_PYTHON=$(TFLITE_VENV)/bin/python $(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-avx2

test-avx2: install
	@isa=$$($(BIN)/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"); \
	case "$$isa" in \
	AVX512*) set -x; ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 CONVNEXT_TEST_AS_AVX2=1 $(BIN)/python -m pytest $(AVX2_TESTS) ;; \
	*) echo "test-avx2: PyTorch runs $$isa kernels here, so the run above was already the AVX2 one" ;; \
	esac

clean:
	rm -rf $(VENV) runs .pytest_cache
