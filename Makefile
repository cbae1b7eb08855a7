# `make book` and `make test` do all the set-up on a fresh machine (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The stamp names the hash of pyproject.toml's contents: nbdev-export rewrites the file (same
# contents, new time), which must not trigger a reinstall; a changed dependency must.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: book check-pages test bench export check-sync clean sweep

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed*
	touch $@

export: $(STAMP)
	$(BIN)/nbdev-export

# Fails when the package is out of sync with the notebooks, or a notebook is not nbdev-clean.
check-sync: export
	$(BIN)/nbdev-clean
	@git diff --exit-code --stat -- sfp_nb nbs || { echo "sfp_nb/ or nbs/ changed: run nbdev-export and nbdev-clean, then commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- sfp_nb nbs)" || { echo "untracked files in sfp_nb/ or nbs/: commit them"; exit 1; }

# pytest first: tests/test_glue.py compares the last book build with results/, which nbdev-test rewrites.
test: export
	SFP_BUDGET=smoke $(BIN)/pytest tests
	SFP_BUDGET=smoke $(BIN)/nbdev-test --n-workers 2 --timing

# BUDGET=smoke builds the same book at smoke size (CI does this); SEED_OFFSET=100 builds it on a
# second, disjoint set of seeds (results in results/seeds100/). SFP_PROGRESS=0: no progress bar
# reaches a page (and --warningiserror fails on anything a notebook writes to stderr).
# _build/{budget,seed_offset} record which results folder the pages were glued from, and
# _build/build_id the stamp every record of this build carries (tests/test_glue.py, check-pages).
BUDGET ?= full
SEED_OFFSET ?= 0
BUILD_ID := $(shell date -u +%Y%m%dT%H%M%SZ)-$(shell od -An -N4 -tx4 /dev/urandom | tr -d ' ')
book: export
	$(BIN)/python tools/prepare_book.py
	rm -rf _build/html/reports
	mkdir -p _build && echo $(BUDGET) > _build/budget && echo $(SEED_OFFSET) > _build/seed_offset && echo $(BUILD_ID) > _build/build_id
	SFP_BUDGET=$(BUDGET) SFP_SEED_OFFSET=$(SEED_OFFSET) SFP_BUILD_ID=$(BUILD_ID) SFP_PROGRESS=0 \
		$(BIN)/jupyter-book build _book --path-output . --warningiserror --keep-going

# Renders every page of the built book in headless Chromium (tools/check_pages.py).
check-pages:
	$(BIN)/python tools/check_pages.py

bench: export
	for f in benchmarks/bench_*.py; do SFP_BUDGET=full $(BIN)/python $$f || exit 1; done

# The complete persona-engineering grid (chapters 15-16), resumable; on Dask:
# make sweep SWEEP_ARGS="--backend dask --jobs 16" (or --client tcp://scheduler:8786).
sweep: export
	$(BIN)/python -m sfp_nb.studies.diagnostic --budget full $(SWEEP_ARGS)

clean:
	rm -rf _build _book
