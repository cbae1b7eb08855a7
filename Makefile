# `make book` and `make test` do all the set-up on a fresh machine (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test bench export check-sync clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

export: $(STAMP)
	$(BIN)/nbdev-export

# Fails when the package is out of sync with the notebooks, or a notebook is not nbdev-clean.
check-sync: export
	$(BIN)/nbdev-clean
	@git diff --exit-code --stat -- sfp_nb nbs || { echo "sfp_nb/ or nbs/ changed: run nbdev-export and nbdev-clean, then commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- sfp_nb nbs)" || { echo "untracked files in sfp_nb/ or nbs/: commit them"; exit 1; }

test: export
	SFP_BUDGET=smoke $(BIN)/nbdev-test --n-workers 2 --timing
	SFP_BUDGET=smoke $(BIN)/pytest tests

# BUDGET=smoke builds the same book at smoke size (CI does this).
BUDGET ?= full
book: export
	$(BIN)/python tools/prepare_book.py
	SFP_BUDGET=$(BUDGET) $(BIN)/jupyter-book build _book --path-output . --warningiserror --keep-going

bench: export
	for f in benchmarks/bench_*.py; do SFP_BUDGET=full $(BIN)/python $$f || exit 1; done

clean:
	rm -rf _build _book
