# The README's two commands: `make demo` (set up, train on assets/, classify) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib; print(hashlib.sha1(open('pyproject.toml', 'rb').read()).hexdigest()[:12])")

.PHONY: setup demo test runtime-wheel clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,ray,dev]"
	touch $@

demo: $(STAMP)
	$(BIN)/train-model assets --export model.onnx
	$(BIN)/classify model.onnx assets/CD/7001-115.jpg assets/UD/7001-1.jpg

test: $(STAMP)
	$(BIN)/python -m pytest

runtime-wheel:  # dist/retrain_onnx_runtime-*.whl: the runtime alone (no TensorFlow, no tf2onnx)
	$(PYTHON) packaging/build_runtime_wheel.py dist

clean:
	rm -rf $(VENV) .retrain-cache model.onnx model.report.json model.report.html model.*.png build dist *.egg-info
