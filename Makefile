# slim's two entry points: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-podman unit lint engine base-images fat-image test-deps bench schemas clean

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

## The compilers and tools the tests use (gcc with 32-bit support, musl-gcc...).
test-deps:
	bash scripts/test-deps.sh

## The demo: engine, base images, fat nginx build, then slim's main job on it.
demo: $(STAMP) fat-image
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

## The whole test suite: unit tests, then integration tests on a real engine.
test: $(STAMP) test-deps fat-image
	$(BIN)/ruff check slimmer tests benchmarks
	$(BIN)/pytest tests

## The Podman lane: the engine_lane tests (trace, build, verify of fixtures/healthuser)
## and the Podman-only ones, on a rootful Podman, then the engine_lane tests on a
## rootless one. scripts/podman.sh installs and starts each and prints its DOCKER_HOST.
test-podman: $(STAMP) test-deps base-images
	host=$$(bash scripts/podman.sh rootful) && \
	    DOCKER_HOST=$$host $(BIN)/pytest tests/integration -m 'engine_lane or podman'
	host=$$(bash scripts/podman.sh rootless) && \
	    DOCKER_HOST=$$host $(BIN)/pytest tests/integration -m engine_lane

## Unit tests only: no engine needed.
unit: $(STAMP) test-deps
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check slimmer tests benchmarks

## Figures, not tests: closure speed, watch set-up and event rate, build and verify time,
## end-to-end builds split by phase (nginx, bigtree, 60,000 files), the syscall observer's cost.
bench: $(STAMP) fat-image
	$(BIN)/python benchmarks/closure.py
	$(BIN)/python benchmarks/watch.py
	$(BIN)/python benchmarks/build.py
	$(BIN)/python benchmarks/endtoend.py
	$(BIN)/python benchmarks/syscalls.py
	$(BIN)/python benchmarks/syscall_trace.py
	$(BIN)/python benchmarks/eintr.py

## Regenerate slimmer/schemas/*.json after changing a format's dataclasses.
schemas: $(STAMP)
	$(BIN)/python -m slimmer.schema

clean:
	rm -rf $(VENV) .pytest_cache .slim
