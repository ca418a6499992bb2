# The two set-up commands of the README: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch/torchvision are named first so pip takes the builds this machine
# keeps on disk instead of resolving a newer CUDA wheel.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

# --durations: the slowest tests, in every CI log (the suite's wall time is watched).
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=25

# The quickstart study, then its HTML report: `xsam-tune report` prints the
# report's path (and the Markdown summary's), then the paper's claims tested
# on it (`xsam-tune claims`), the last thing the demo prints. A failed run
# stops here. The report is of the study this run printed (--print-dir-to),
# never of another one that `last-study` may name meanwhile.
demo: install
	dirfile="$$(mktemp)" && trap 'rm -f "$$dirfile"' EXIT && \
	$(BIN)/xsam-tune run configs/quickstart.yaml --print-dir-to "$$dirfile" && \
	$(BIN)/xsam-tune report "$$(cat "$$dirfile")" && \
	$(BIN)/xsam-tune claims "$$(cat "$$dirfile")"

clean:
	rm -rf $(VENV) build *.egg-info
