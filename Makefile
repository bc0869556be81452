# slim's two entry points: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test unit lint engine base-images fat-image bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

engine:
	bash scripts/engine.sh

base-images: engine
	bash scripts/base-images.sh

fat-image: base-images
	bash scripts/fat-image.sh

## The demo: engine, base images, fat nginx build, then slim's main job on it.
demo: $(STAMP) fat-image
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

## The whole test suite: unit tests, then integration tests on a real engine.
test: $(STAMP) fat-image
	$(BIN)/ruff check slimmer tests benchmarks
	$(BIN)/pytest tests

## Unit tests only: no engine needed.
unit: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check slimmer tests benchmarks

## Figures, not tests: closure speed, watch set-up and event rate, build and verify time,
## the syscall observer's cost.
bench: $(STAMP) fat-image
	$(BIN)/python benchmarks/closure.py
	$(BIN)/python benchmarks/watch.py
	$(BIN)/python benchmarks/build.py
	$(BIN)/python benchmarks/syscalls.py

clean:
	rm -rf $(VENV) .pytest_cache .slim
