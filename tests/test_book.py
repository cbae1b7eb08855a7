"The book staging step: nbdev directives become cell tags and never reach the rendered page."
import importlib.util, json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("prepare_book", ROOT / "tools" / "prepare_book.py")
prepare_book = importlib.util.module_from_spec(spec); spec.loader.exec_module(prepare_book)

def code(src, **meta): return {"cell_type": "code", "source": src, "metadata": meta, "outputs": [], "execution_count": None}

def test_directives_become_tags():
    assert prepare_book.stage_cell(code("#| default_exp ghmm")) is None
    c = prepare_book.stage_cell(code("#| export\ndef f(): pass"))
    assert c["source"] == "def f(): pass" and c["metadata"]["tags"] == []
    assert prepare_book.stage_cell(code("#| hide\nimport x"))["metadata"]["tags"] == ["remove-cell"]
    assert prepare_book.stage_cell(code("#| echo: false\nplot()", tags=["x"]))["metadata"]["tags"] == ["remove-input", "x"]
    md = {"cell_type": "markdown", "source": "#| not a directive in markdown", "metadata": {}}
    assert prepare_book.stage_cell(md) == md

def test_every_notebook_stages_without_directives(tmp_path):
    for nb in prepare_book.notebooks():
        prepare_book.stage_notebook(nb, tmp_path / nb.name)
        cells = json.loads((tmp_path / nb.name).read_text())["cells"]
        assert not any("#|" in "".join(c["source"]) for c in cells if c["cell_type"] == "code"), nb.name

def test_toc_lists_every_notebook():
    toc = (ROOT / "_toc.yml").read_text()
    for nb in prepare_book.notebooks():
        page = nb.relative_to(ROOT).with_suffix("").as_posix()
        assert f"file: {page}\n" in toc or f"root: {page}\n" in toc, f"{page} is missing from _toc.yml"


def test_ci_builds_the_book_first_from_nothing():
    "CI builds the smoke book before anything trains a model, then checks pages, then runs the README's tests."
    ci = (ROOT / ".ci" / "run").read_text()
    stages = [ci.index(s) for s in ('stage "smoke book', 'stage "page checks"', 'stage "make test"', 'stage "make check-sync"')]
    assert stages == sorted(stages), "CI stages out of order"
    assert 'SFP_ARTIFACTS="$(mktemp -d)" make book BUDGET=smoke' in ci and "set -euo pipefail" in ci
    assert "tools/check_pages.py" in ci and "tests/test_glue.py" in ci


def test_book_build_hides_progress_bars_and_fails_on_warnings():
    book = (ROOT / "Makefile").read_text().split("\nbook:")[1].split("\n\n")[0]
    assert "SFP_PROGRESS=0" in book and "--warningiserror" in book
