"""Render every page of the built book in headless Chromium and fail on what a reader must never see.

`make book` proves that the notebooks execute; this proves that the pages read well once a browser
has run their JavaScript. For each page in `_toc.yml` it dumps the DOM after MathJax has typeset it
(`chromium --dump-dom` with a virtual-time budget, a few pages at a time) and reports:

- math that is not typeset: the page has math (`.math` elements, or `$...$` / `{math}` in its source)
  but no `mjx-container`, some formulas left as raw TeX, or a MathJax error (`mjx-merror`);
- a Python traceback (`Traceback (most recent call last)` or a `.traceback` output);
- a stderr output block (`.output.stderr`);
- a code block showing an nbdev directive (`#|`);
- a glued value shown with quote marks (`'0.6456'`) or as a numpy repr (`np.float64(0.6456)`);
- a formula holding a literal `$` or a run of English words (math delimiters paired wrongly, e.g. an
  inline `$$...$$` inside a paragraph);
- a `{glue:...}` role inside a formula (MyST does not expand roles in math, so the reader sees the role);
- a glued value the page's prose names but its notebook never glued (it would show as a blank);
- an execution report (`_build/html/reports/<page>.err.log`): the notebook stopped at an error, and the
  page shows whatever ran before it;
- a results record the page glues from that this build did not write: its `build` stamp differs from
  `_build/build_id` (the chapter failed before saving, or saved somewhere else).

Exit status 1 lists every offending page with its reasons; 0 means every page is clean.
Usage: `python tools/check_pages.py [--html _build/html] [--toc _toc.yml] [--jobs 3]`.
"""
from __future__ import annotations

import argparse, json, os, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=20000"]
QUOTES = "'\"\u2018\u2019\u201c\u201d"
NUMPY_REPR = re.compile(r"\bnp\.\w+\(")
DIRECTIVE = re.compile(r"^\s*#\|", re.M)
TRACEBACK = "Traceback (most recent call last)"
# MyST dollarmath: `$$...$$`, or `$...$` whose content neither starts nor ends with a space and
# whose closing `$` is not followed by a digit.
DOLLAR_MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$(?![\s$])[^$\n]*?(?<![\s\\])\$(?!\d)", re.S)
MATH_DIRECTIVE = re.compile(r"^\s*(```|:::)\s*\{math\}|\\begin\{(equation|align|gather|multline)\*?\}", re.M)
CODE = re.compile(r"```.*?```|~~~.*?~~~|`[^`\n]*`", re.S)
FENCED = re.compile(r"```.*?```|~~~.*?~~~|``.*?``", re.S)
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:\s]+)(?::[^`\n]*)?`")
# TeX commands whose argument is text (`\text{total variation}` is fine) and other commands.
TEX_TEXT = re.compile(r"\\(?:text\w*|math\w*|operatorname|mbox)\s*\{[^{}]*\}")
TEX_COMMAND = re.compile(r"\\[A-Za-z]+")
ENGLISH = re.compile(r"\b[A-Za-z]{2,}\s+[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")


def find_chromium() -> str | None:
    "The Chromium executable: `$CHROMIUM`, else the first of chromium / chromium-browser / google-chrome on PATH."
    if os.environ.get("CHROMIUM"): return os.environ["CHROMIUM"]
    return next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)


def toc_pages(toc: Path) -> list[str]:
    "Every document named in a Jupyter Book `_toc.yml` (root first), as paths without suffix."
    data = yaml.safe_load(toc.read_text())
    pages = [data["root"]]
    def walk(node):
        if isinstance(node, dict):
            if "file" in node: pages.append(node["file"])
            for v in node.values(): walk(v)
        elif isinstance(node, list):
            for v in node: walk(v)
    walk({k: v for k, v in data.items() if k != "root"})
    return [str(Path(p).with_suffix("")) if p.endswith((".ipynb", ".md")) else p for p in pages]


def prose(source: str) -> str:
    "The markdown of a page source (a notebook's markdown cells, or a markdown file as it is)."
    if not source.lstrip().startswith("{"): return source
    try: cells = json.loads(source)["cells"]
    except (ValueError, KeyError): cells = []
    return "\n\n".join("".join(c["source"]) for c in cells if c.get("cell_type") == "markdown")


def source_has_math(source: str) -> bool:
    "Whether a page source (notebook JSON or markdown) has `$`-delimited math or a math directive in its prose."
    source = prose(source)
    return bool(MATH_DIRECTIVE.search(source) or DOLLAR_MATH.search(CODE.sub(" ", source)))


def glue_named(source: str) -> set[str]:
    "The glue keys a page's prose shows with `{glue:...}` roles (not those quoted in code)."
    return set(GLUE_ROLE.findall(FENCED.sub(" ", prose(source))))


def page_source(html_dir: Path, page: str) -> str:
    "The page's source as Sphinx copied it to `_sources/` ('' when there is none)."
    for suffix in (".ipynb", ".ipynb.txt", ".md", ".md.txt", ".txt"):
        p = html_dir / "_sources" / f"{page}{suffix}"
        if p.exists(): return p.read_text(errors="replace")
    return ""


def render(url: str, chromium: str, timeout: float = 90) -> str:
    "The DOM of `url` after its scripts ran (MathJax included), dumped by headless Chromium."
    with tempfile.TemporaryDirectory(prefix="check-pages-") as profile:
        r = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                           capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or "<html" not in r.stdout.lower():
        tail = "\n".join(r.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"chromium exited with {r.returncode} and no page: {tail}")
    return r.stdout


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def page_problems(static_html: str, dom: str, source: str = "") -> list[str]:
    "Everything wrong with one page, given its HTML file, its DOM after scripts ran, and its source."
    before, after = BeautifulSoup(static_html, "html.parser"), BeautifulSoup(dom, "html.parser")
    body = after.select_one("main, article, div.bd-article") or after.body or after
    found = []
    n_math = len(before.select(".math"))
    if n_math or source_has_math(source):
        typeset = after.find_all("mjx-container")
        raw = [m for m in after.select(".math") if not m.find("mjx-container")]
        if not typeset:
            found.append(f"math not typeset: {n_math} formula(s) but no mjx-container"
                         if n_math else "math in the source, but none on the page ($ delimiters not parsed?)")
        elif raw:
            found.append(f"math not typeset: {len(raw)} of {n_math} formula(s) left as TeX, e.g. {_short(raw[0].get_text())!r}")
    for m in before.select(".math"):
        tex = m.get_text()
        if "{glue:" in tex:
            found.append(f"a glue role inside a formula (not expanded there): {_short(tex)!r}")
        elif "$" in tex.replace("\\$", ""):
            found.append(f"a literal $ inside a formula (delimiters paired wrongly?): {_short(tex)!r}")
        elif words := ENGLISH.search(TEX_COMMAND.sub(" ", TEX_TEXT.sub(" ", tex))):
            found.append(f"English words typeset as math: {words.group(0)!r} in {_short(tex)!r}")
    for err in after.find_all("mjx-merror"):
        found.append(f"MathJax error: {_short(err.get('data-mjx-error') or err.get_text())!r}")
    tracebacks = body.select(".output.traceback")
    if tracebacks or TRACEBACK in body.get_text():
        found.append(f"Python traceback shown: {_short((tracebacks[0] if tracebacks else body).get_text()[-200:])!r}")
    for block in body.select(".output.stderr"):
        found.append(f"stderr output shown: {_short(block.get_text())!r}")
    for pre in body.find_all("pre"):
        if DIRECTIVE.search(pre.get_text()):
            line = next(l for l in pre.get_text().splitlines() if DIRECTIVE.match(l))
            found.append(f"code block shows an nbdev directive: {line.strip()!r}")
    glued = [e for e in body.select(".pasted-text, .pasted-inline, .output.text_plain")
             if not e.find_parent(class_="cell_output")]
    for e in glued:
        text = e.get_text().strip()
        if len(text) >= 2 and text[0] in QUOTES and text[-1] in QUOTES:
            found.append(f"glued value shown with quotes: {_short(text)}")
        elif NUMPY_REPR.search(text):
            found.append(f"glued value shown as a numpy repr: {_short(text)}")
    return found


def glued_keys(build: Path, page: str) -> set[str] | None:
    "The keys `page`'s notebook glued in the build under `build` (`jupyter_execute/<page>.glue.json`); None if unknown."
    path = build / "jupyter_execute" / f"{page}.glue.json"
    return set(json.loads(path.read_text())) if path.exists() else None


def build_problems(build: Path, page: str, source: str, results: Path | None = None) -> list[str]:
    "What the build says about one page: an execution report, glue the prose names but nothing glued, stale records."
    found, folder = [], results or results_folder(build)
    if (report := build / "html" / "reports" / f"{page}.err.log").exists():
        last = report.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        found.append(f"its notebook failed (execution report {report.relative_to(build)}): {_short(last[0], 120)}")
    named = glue_named(source)
    if named and (keys := glued_keys(build, page)) is not None and (blank := sorted(named - keys)):
        found.append(f"{len(blank)} glued value(s) the prose shows were never glued (blank on the page), e.g. {blank[0]!r}")
    if (stamp := build / "build_id").exists() and folder.is_dir():
        build_id = stamp.read_text().strip()
        for name in sorted({k.split(".")[0] for k in named}):
            path = folder / f"{name}.json"
            if path.exists() and (got := json.loads(path.read_text()).get("build")) != build_id:
                found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} is not from this build "
                             f"(build {got!r}, this build {build_id!r})")
    return found


def results_folder(build: Path) -> Path:
    "The results folder a build glued from: `results/`, `results/smoke/`, `seeds<offset>/` below either."
    read = lambda name, default: (build / name).read_text().strip() if (build / name).exists() else default
    d = ROOT / "results" / ("smoke" if read("budget", "full") == "smoke" else "")
    return d / f"seeds{read('seed_offset', '0')}" if read("seed_offset", "0") != "0" else d


def check_page(html_dir: Path, page: str, chromium: str) -> list[str]:
    "The problems of one page of the built book (a missing or unrenderable page is a problem too)."
    path = html_dir / f"{page}.html"
    if not path.exists(): return [f"no page {path} (is it in the toc but not built?)"]
    source = page_source(html_dir, page)
    found = build_problems(html_dir.parent, page, source)
    try: dom = render(path.resolve().as_uri(), chromium)
    except (RuntimeError, subprocess.TimeoutExpired) as e: return found + [f"could not render: {e}"]
    return found + page_problems(path.read_text(errors="replace"), dom, source)


def check_book(html_dir: Path, pages: list[str], chromium: str, jobs: int = 3) -> dict[str, list[str]]:
    "Each page's problems, checking `jobs` pages at a time."
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(pages, pool.map(lambda p: check_page(html_dir, p, chromium), pages)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built book (default _build/html)")
    ap.add_argument("--toc", type=Path, default=ROOT / "_toc.yml", help="the table of contents naming the pages")
    ap.add_argument("--jobs", type=int, default=3, help="pages rendered at a time (default 3)")
    ap.add_argument("--chromium", default=find_chromium(), help="Chromium executable (default: $CHROMIUM or on PATH)")
    args = ap.parse_args(argv)
    if not args.chromium: sys.exit("check_pages: no Chromium found (apt-get install chromium, or set $CHROMIUM)")
    if not args.html.is_dir(): sys.exit(f"check_pages: no built book in {args.html} (run make book)")
    if args.jobs < 1: sys.exit(f"check_pages: --jobs must be at least 1, got {args.jobs}")
    t0 = time.perf_counter()
    pages = toc_pages(args.toc)
    results = check_book(args.html, pages, args.chromium, args.jobs)
    bad = {p: probs for p, probs in results.items() if probs}
    for page, probs in bad.items():
        print(f"FAIL {page}.html")
        for p in probs: print(f"  - {p}")
    print(f"check_pages: {len(pages)} pages, {len(bad)} with problems, {time.perf_counter() - t0:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
