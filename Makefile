# One venv, built from the lock file. `make test` / `make demo` build it when it is missing or stale.
PY      := .venv/bin/python
STAMP   := .venv/.installed
WHEELS  ?= /opt/wheels

.PHONY: install test test-fast demo demo-shapes train-shapes bench lint clean

$(STAMP): requirements.lock pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps --find-links $(WHEELS) -r requirements.lock
	# transformers' TF reference needs tf-keras; its own deps would pull the full tensorflow wheel.
	$(PY) -m pip install -q --no-deps tf-keras==2.21.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q -m "not slow"

demo: $(STAMP)
	$(PY) -m tools.demo

# zero-shot, retrieval and heatmaps of the committed shapes CLIP in all three backends (about 2 min)
demo-shapes: $(STAMP)
	$(PY) -m tools.shapes_demo --out demo_out/shapes

# retrain tests/data/shapes-clip from scratch (10-35 min on 2 cores, depending on their load)
train-shapes: $(STAMP)
	$(PY) -m tools.train_shapes

bench: $(STAMP)
	$(PY) -m tools.bench --out bench.json

lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check clip_core clip_torch clip_tf clip_flax tools tests

clean:
	rm -rf .venv
