# `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Both make the virtual environment (.venv) first when it is missing.

.PHONY: setup demo test test-slow bench

.venv/.ready: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: .venv/.ready

demo: .venv/.ready
	mkdir -p runs/demo
	cd runs/demo && ../../.venv/bin/kdx search ../../examples/demo.yaml --resume

# HF_HUB_OFFLINE: the tests read Hugging Face models and tokenizers from configs and local folders only.
test: .venv/.ready
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

test-slow: .venv/.ready
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m slow

bench: .venv/.ready
	.venv/bin/python benchmarks/bench_step.py
	.venv/bin/python benchmarks/bench_kd_gain.py
