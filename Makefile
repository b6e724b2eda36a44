# hdrlab: every target creates or refreshes the virtual environment itself.
# The venv is rebuilt when pyproject.toml or constraints.txt change (the stamp file below).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hdrlab-installed
DEMO_OUT ?= demo_out

.PHONY: venv test demo bench gpu-check clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The README's test command. Every test runs; the slowest are listed at the end.
test: $(STAMP)
	$(PY) -m pytest --durations=25 --timeout=900

# The main job on the embedded procedural data (plus one real HDR from $$HDRLAB_DATA when present).
demo: $(STAMP)
	$(PY) -m hdrlab demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(PY) benchmarks/bench_mergers.py --json benchmarks/results/mergers.json
	$(PY) benchmarks/bench_two_stage_merge.py --json benchmarks/results/two_stage_merge.json
	$(PY) benchmarks/bench_scaling.py
	$(PY) benchmarks/bench_synthesis.py
	$(PY) benchmarks/bench_lightning_overhead.py
	$(PY) benchmarks/bench_flops.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/report.py

# On a CUDA machine: every experiment at full size under --memory_budget 4GiB, real peaks beside the estimate.
# Runs with $(PYTHON) as it is (a CUDA build of torch and hdrlab's dependencies installed; no venv is built).
gpu-check:
	$(PYTHON) benchmarks/gpu_budget_check.py --out docs/results/gpu_budget_4gib

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
