# make demo: set up, then the main job on the embedded defaults.  make test: set up, then the whole suite.
# make test-quick: the suite without the end-to-end runs.  make docs: the stage pages' flag tables, from the code.
PY := .venv/bin/python
STAMP := .venv/.xcompress-setup

.PHONY: setup demo test test-quick docs bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	.venv/bin/xcompress demo

test: setup
	$(PY) -m pytest -q tests

test-quick: setup
	$(PY) -m pytest -q -m "not slow" tests

docs: setup
	$(PY) -m stagekit.docs
	$(PY) -m modeling.families

bench: setup
	$(PY) benchmarks/decompose.py
	$(PY) benchmarks/pregenerate.py
	$(PY) benchmarks/general_distill.py
	$(PY) benchmarks/accuracy.py --work runs/bench-accuracy
	$(PY) benchmarks/compress.py --work runs/bench-accuracy

clean:
	rm -rf runs benchmarks/results .pytest_cache
