# One entry point for people and CI. Every target sets up .venv first (a no-op when up to date).
VENV := .venv
PY := $(VENV)/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup standins demo test bench bench-clip-format lint lock image clean

setup:
	@bash scripts/setup.sh

# The tests' cloud stand-ins (a GCS fake built from its Go module, iproute2 for network namespaces) and Beam's Flink
# job server (assembled from Maven Central; --beam-runner flink needs it); cached.
standins:
	@bash scripts/install_standins.sh

demo: setup
	$(PY) -m pipeline demo

# Two pytest-xdist processes (groups and their order: tests/conftest.py); TEST_PROCESSES=0 runs it serially.
TEST_PROCESSES ?= 2
test: setup standins
	$(PY) -m pytest -q -n $(TEST_PROCESSES) tests

# The benchmark table (bench/README.md, bench/results.json): 27.5 minutes on 2 cores (2026-12-02; the model rows
# 12.5 of them, the same rows under the AVX2 cap 3.9).
bench: setup
	$(PY) -m bench

# The clip storage-format study (bench/clip_format.py; prints its tables).
bench-clip-format: setup
	$(PY) -m bench.clip_format

lint: setup
	$(VENV)/bin/hadolint Dockerfile

# Re-resolve the pins (needs network): only when changing dependencies on purpose.
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^bresnet-tfx' > requirements.lock

image:
	docker build -t $${IMAGE:-bresnet-tfx:latest} .

clean:
	rm -rf $(VENV) runs demo_data serving
