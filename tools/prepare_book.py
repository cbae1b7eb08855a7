"""Stage the book in `_book/`: copy `_config.yml`, `_toc.yml`, `references.bib`, `_static/` and the notebooks (keeping their folders), turning nbdev directives into cell tags.

Jupyter Book renders `#|` comments verbatim, so each directive line is removed from the copy and
its meaning kept as a tag: `#| hide` -> `remove-cell`, `#| echo: false` -> `remove-input`,
`#| output: false` -> `remove-output`. A cell left empty (only `#| default_exp`) is dropped.
The notebooks in `nbs/` are never modified.
"""
import json, re, shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "_book"
TAGS = {"hide": "remove-cell", "echo: false": "remove-input", "output: false": "remove-output"}
DIRECTIVE = re.compile(r"^\s*#\|\s*(.*?)\s*$")


def stage_cell(cell: dict) -> dict | None:
    "The cell as the book shows it, or None when nothing is left to show."
    if cell["cell_type"] != "code": return cell
    src = "".join(cell["source"]).splitlines()
    directives = [m.group(1) for line in src if (m := DIRECTIVE.match(line))]
    body = "\n".join(line for line in src if not DIRECTIVE.match(line)).strip("\n")
    if not body: return None
    tags = set(cell.get("metadata", {}).get("tags", []))
    tags |= {TAGS[d] for d in directives if d in TAGS}
    cell = {**cell, "source": body, "metadata": {**cell.get("metadata", {}), "tags": sorted(tags)}}
    return cell


def stage_notebook(src: Path, dst: Path) -> None:
    nb = json.loads(src.read_text())
    nb["cells"] = [c for c in map(stage_cell, nb["cells"]) if c is not None]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb, indent=1))


def notebooks() -> list[Path]:
    "The book's notebooks: `nbs/` and its wings (`library/`, `studies/`), without scratch (`_*`, `.*`)."
    return [nb for nb in sorted((ROOT / "nbs").rglob("*.ipynb"))
            if not any(part.startswith(("_", ".")) for part in nb.relative_to(ROOT / "nbs").parts)]


def main() -> None:
    if STAGE.exists(): shutil.rmtree(STAGE)
    STAGE.mkdir()
    for name in ("_config.yml", "_toc.yml", "references.bib"): shutil.copy(ROOT / name, STAGE / name)
    shutil.copytree(ROOT / "_static", STAGE / "_static")  # page CSS (Sphinx's html_static_path)
    books = notebooks()
    for nb in books: stage_notebook(nb, STAGE / nb.relative_to(ROOT))
    print(f"staged {len(books)} notebooks in {STAGE}")


if __name__ == "__main__":
    main()
