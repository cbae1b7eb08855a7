# `make book` and `make test` do all the set-up on a fresh machine (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The stamp names the hash of pyproject.toml's contents: nbdev-export rewrites the file (same
# contents, new time), which must not trigger a reinstall; a changed dependency must.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: book check-pages test bench export check-sync clean

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

# BUDGET=smoke builds the same book at smoke size (CI does this). SFP_PROGRESS=0: no progress bar
# reaches a page (and --warningiserror fails on anything a notebook writes to stderr).
# _build/budget records which results/ folder the pages were glued from (tests/test_glue.py).
BUDGET ?= full
book: export
	$(BIN)/python tools/prepare_book.py
	mkdir -p _build && echo $(BUDGET) > _build/budget
	SFP_BUDGET=$(BUDGET) SFP_PROGRESS=0 $(BIN)/jupyter-book build _book --path-output . --warningiserror --keep-going

# Renders every page of the built book in headless Chromium (tools/check_pages.py).
check-pages:
	$(BIN)/python tools/check_pages.py

bench: export
	for f in benchmarks/bench_*.py; do SFP_BUDGET=full $(BIN)/python $$f || exit 1; done

clean:
	rm -rf _build _book
