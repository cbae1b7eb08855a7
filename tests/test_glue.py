"""Every number a page shows agrees with the results file it was saved to.

Convention (`sfp_nb.core.glue_results`): a number on a page is glued under `<results name>.<key>.<subkey>...`,
its path in `results/<results name>.json` (`results/smoke/` for a smoke build). myst-nb writes each
page's glued values to `_build/jupyter_execute/<page>.glue.json` (outputs with `scrapbook` metadata;
any left in the executed notebooks are read too). `make book` writes the budget it built with to
`_build/budget` (and a replication build's seed offset to `_build/seed_offset`: its results are in `seeds<offset>/`). Every glue key whose first dotted part names a results file of that budget must
lead to a value there equal to the glued one (floats exactly, after the round trip through repr).
"""
import ast, json, math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"


def glue_outputs(executed: Path) -> dict[tuple[str, str], dict]:
    "(page, key) -> the glued mime bundle, from `*.glue.json` and glue outputs left in `*.ipynb` under `executed`."
    found = {}
    for path in sorted(executed.rglob("*.glue.json")):
        page = str(path.relative_to(executed)).removesuffix(".glue.json")
        for key, out in json.loads(path.read_text()).items(): found[page, key] = out.get("data", {})
    for path in sorted(executed.rglob("*.ipynb")):
        page = str(path.relative_to(executed).with_suffix(""))
        for cell in json.loads(path.read_text()).get("cells", []):
            for out in cell.get("outputs", []):
                if not (meta := out.get("metadata", {}).get("scrapbook")): continue
                n = len(meta.get("mime_prefix", ""))
                found.setdefault((page, meta["name"]), {k[n:]: v for k, v in out.get("data", {}).items()})
    return found


def build_budget(build: Path) -> str:
    "The budget of the last book build: `_build/budget`, else the budget whose results folder was written last."
    if (build / "budget").exists(): return (build / "budget").read_text().strip()
    newest = lambda d: max((p.stat().st_mtime for p in d.glob("*.json")), default=0)
    return "smoke" if newest(ROOT / "results" / "smoke") > newest(ROOT / "results") else "full"


def lookup(obj, parts: list[str]):
    "The value at a dotted path (dict keys may contain dots themselves); KeyError when there is none."
    if not parts: return obj
    if isinstance(obj, dict):
        for i in range(len(parts), 0, -1):
            if (k := ".".join(parts[:i])) in obj:
                try: return lookup(obj[k], parts[i:])
                except KeyError: pass
    elif isinstance(obj, list) and parts[0].isdigit() and int(parts[0]) < len(obj):
        return lookup(obj[int(parts[0])], parts[1:])
    raise KeyError(".".join(parts))


def glued_value(text: str):
    "The Python value a glued `text/plain` repr stands for; ValueError for a repr that is no literal (`np.float64(...)`)."
    if text.strip() in ("nan", "inf", "-inf"): return float(text)
    try: return ast.literal_eval(text)
    except (ValueError, SyntaxError): raise ValueError(f"not a Python literal: {text!r} (glue plain Python numbers)") from None


def same(glued, expected) -> bool:
    "Equal as results: numbers exactly (int or float, NaN equals NaN), anything else by ==."
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if num(glued) and num(expected):
        g, e = float(glued), float(expected)
        return g == e or (math.isnan(g) and math.isnan(e))
    return type(glued) is type(expected) and glued == expected


def glue_problems(executed: Path, results: Path, budget: str) -> tuple[list[str], int]:
    "Every glued result that disagrees with (or is missing from) its results file, and how many were checked."
    problems, checked, files = [], 0, {}
    for (page, key), data in glue_outputs(executed).items():
        name, *path = key.split(".")
        if not path or not (results / f"{name}.json").exists(): continue
        if name not in files:
            files[name] = json.loads((results / f"{name}.json").read_text())
            if files[name].get("budget") != budget:
                problems.append(f"{results / name}.json was written at budget {files[name].get('budget')!r}, the book at {budget!r}")
        where = f"{page}: glue {key!r}"
        try: expected = lookup(files[name], path)
        except KeyError:
            problems.append(f"{where}: no {'.'.join(path)!r} in {results.name}/{name}.json"); continue
        if isinstance(expected, (dict, list)):
            problems.append(f"{where}: {'.'.join(path)!r} is a {type(expected).__name__} in {name}.json, not a number"); continue
        if "text/plain" not in data:
            problems.append(f"{where}: no text/plain in the glued output"); continue
        checked += 1
        try: glued = glued_value(data["text/plain"])
        except ValueError as e:
            problems.append(f"{where}: {e}"); continue
        if not same(glued, expected):
            problems.append(f"{where} shows {data['text/plain']}, but {name}.json has {expected!r}")
    return problems, checked


def test_book_glue_agrees_with_results():
    executed = BUILD / "jupyter_execute"
    if not executed.is_dir(): pytest.skip("no book build (_build/jupyter_execute): run `make book` or `make book BUDGET=smoke` first")
    budget = build_budget(BUILD)
    results = ROOT / "results" if budget == "full" else ROOT / "results" / "smoke"
    offset = (BUILD / "seed_offset").read_text().strip() if (BUILD / "seed_offset").exists() else "0"
    if offset != "0": results = results / f"seeds{offset}"  # a replication build (make book SEED_OFFSET=...)
    problems, checked = glue_problems(executed, results, budget)
    print(f"{checked} glued results checked against {results}")
    assert not problems, "pages disagree with their results:\n" + "\n".join(problems)
    assert checked >= 100, f"only {checked} glued results name a results file: are the chapters gluing their records?"


# The checker itself, on a synthetic build.

def write_build(tmp_path: Path, glue: dict, results: dict, budget: str = "smoke") -> tuple[Path, Path]:
    executed, res = tmp_path / "jupyter_execute", tmp_path / "results"
    (executed / "nbs").mkdir(parents=True); res.mkdir()
    (executed / "nbs" / "page.glue.json").write_text(json.dumps({k: {"output_type": "display_data", "data": {"text/plain": v},
        "metadata": {"scrapbook": {"name": k, "mime_prefix": "application/papermill.record/"}}} for k, v in glue.items()}))
    for name, data in results.items(): (res / f"{name}.json").write_text(json.dumps({"budget": budget, **data}))
    return executed, res


def test_agreeing_glue_passes(tmp_path):
    x = 0.1 + 0.2
    executed, res = write_build(tmp_path, {"training.gap": repr(x), "training.run.steps": "200", "training.best": "'sfp'",
                                           "training.lr.0.003": "1.5", "training.nan": "nan", "steps": "'not a result'",
                                           "other.x": "1"}, {"training": {"gap": x, "run": {"steps": 200}, "best": "sfp",
                                                                         "lr": {"0.003": 1.5}, "nan": float("nan")}})
    assert glue_problems(executed, res, "smoke") == ([], 5)


def test_disagreeing_glue_is_caught(tmp_path):
    executed, res = write_build(tmp_path, {"training.gap": "0.30000000000000004", "training.gone": "1", "training.run": "2",
                                           "training.np": "np.float64(0.5)", "training.steps": "'200'"},
                                {"training": {"gap": 0.3, "run": {"steps": 200}, "np": 0.5, "steps": 200}}, budget="full")
    problems, _ = glue_problems(executed, res, "smoke")
    text = "\n".join(problems)
    for expected in ["budget 'full'", "'training.gap' shows 0.30000000000000004, but training.json has 0.3",
                     "no 'gone' in results/training.json", "'run' is a dict", "not a Python literal: 'np.float64(0.5)'",
                     "'training.steps' shows '200', but training.json has 200"]:
        assert expected in text, f"{expected!r} not reported in:\n{text}"
    assert len(problems) == 6


def test_glue_left_in_a_notebook_is_read(tmp_path):
    (tmp_path / "a.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": {"application/papermill.record/text/plain": "3"},
         "metadata": {"scrapbook": {"name": "r.k", "mime_prefix": "application/papermill.record/"}}},
        {"output_type": "stream", "text": "hi"}]}]}))
    assert glue_outputs(tmp_path) == {("a", "r.k"): {"text/plain": "3"}}
