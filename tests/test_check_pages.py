"The page checker (tools/check_pages.py) on synthetic pages: one clean page per kind, one page per failure."
import contextlib, importlib.util, io, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_pages", ROOT / "tools" / "check_pages.py")
check_pages = importlib.util.module_from_spec(spec); spec.loader.exec_module(check_pages)

_mj = importlib.util.find_spec("sphinx-mathjax-offline")  # the MathJax the book bundles
MATHJAX = Path(_mj.origin).parent / "static" / "mathjax" / "tex-chtml.js" if _mj else None


def page(body: str, mathjax: bool = False, delay_ms: int = 0) -> str:
    "A page shaped like a Jupyter Book page: `body` inside `<main>`, MathJax loaded (after `delay_ms`) if asked."
    script = ""
    if mathjax and delay_ms:
        script = (f"<script>setTimeout(() => {{ const s = document.createElement('script'); "
                  f"s.src = '{MATHJAX.as_uri()}'; document.head.appendChild(s); }}, {delay_ms});</script>")
    elif mathjax:
        script = f'<script defer src="{MATHJAX.as_uri()}"></script>'
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{script}</head><body><main>{body}</main></body></html>"


def cell(src: str, out: str = "") -> str:
    "A code cell as myst-nb renders it: input block, then an output block."
    return (f'<div class="cell docutils container"><div class="cell_input docutils container">'
            f'<div class="highlight-ipython3 notranslate"><div class="highlight"><pre>{src}</pre></div></div></div>'
            f'<div class="cell_output docutils container">{out}</div></div>')


def output(kind: str, text: str) -> str: return f'<div class="output {kind}"><div class="highlight"><pre>{text}</pre></div></div>'


INLINE, DISPLAY = r'<span class="math notranslate nohighlight">\(x^2\)</span>', r'<div class="math notranslate nohighlight">\[a = b\]</div>'
TB = "Traceback (most recent call last)\n  File \"x.py\", line 1\nValueError: bad"

# name -> (html, source of the page, the problem it must be reported with; None for a clean page)
PAGES = {
    "good": (page(f"<p>Math {INLINE}, glued <span class='pasted-text'>0.646</span> and "
                  f"<span class='output text_plain'>3</span>.</p>{DISPLAY}"
                  + cell("x = 1", output("text_plain", "'a string is fine in a cell output'")), mathjax=True),
             "Costs `$HOME` and $5 or $10, with math $x^2$.", None),
    "good_slow_mathjax": (page(f"<p>Typeset three seconds after load: {INLINE}</p>", mathjax=True, delay_ms=3000), "", None),
    "good_no_math": (page("<p>No formulas, one price: `$5`.</p>" + cell("print(1)", output("stream", "1"))), "It costs `$5`.", None),
    "math_no_mathjax": (page(f"<p>{INLINE}</p>{DISPLAY}"), "", "no mjx-container"),
    "math_partly_typeset": (page(f"<p>{INLINE} and, without delimiters, <span class='math'>y^2</span></p>", mathjax=True), "", "1 of 2 formula(s) left as TeX"),
    "math_only_in_source": (page("<p>Math $x^2$ shown raw.</p>"), json.dumps({"cells": [{"cell_type": "markdown", "source": ["Math $x^2$ shown raw."]}]}), "math in the source"),
    "math_error": (page(r'<p><span class="math notranslate nohighlight">\(\frac{1}\)</span></p>', mathjax=True), "", "MathJax error"),
    "traceback": (page(cell("1/0", output("traceback highlight-ipythontb", TB))), "", "Python traceback"),
    "traceback_printed": (page(cell("import traceback", output("stream", TB))), "", "Python traceback"),
    "stderr": (page(cell("warn()", output("stderr", "UserWarning: careful"))), "", "stderr output"),
    "directive": (page(cell("#| export\ndef f(): pass")), "", "nbdev directive: '#| export'"),
    "quoted_glue": (page("<p>Gap <span class='pasted-text'>'0.6456'</span> nats.</p>"), "", "quotes: '0.6456'"),
    "quoted_inline_glue": (page("<p>Best <span class='output text_plain'>\u2018hello\u2019</span>.</p>"), "", "quotes: \u2018hello\u2019"),
    "numpy_glue": (page("<p>Gap <span class='pasted-text'>np.float64(0.5)</span>.</p>"), "", "numpy repr"),
    # `$$r$$ is the ratio $x$` inside a paragraph: dollarmath pairs the delimiters wrongly
    "math_dollar": (page(r'<p><span class="math notranslate nohighlight">\(r$ is the ratio \)</span></p>', mathjax=True), "", "a literal $ inside a formula"),
    "math_english": (page(r'<p><span class="math notranslate nohighlight">\(x where the mean over tasks\)</span></p>', mathjax=True), "", "English words typeset as math: 'where the mean'"),
    "math_glue_role": (page(r'<p><span class="math notranslate nohighlight">\(10^{{glue:text}`ch.key:.2g`}\)</span></p>', mathjax=True), "", "a glue role inside a formula"),
    "math_text_ok": (page(r'<p><span class="math notranslate nohighlight">\(\text{the mean over tasks} = \bar x\)</span></p>', mathjax=True), "", None),
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    "The checker's exit status and printed report on a book of the synthetic pages (one run, all pages)."
    chromium = check_pages.find_chromium()
    if chromium is None: pytest.skip("Chromium is not installed (apt-get install chromium): the page checker needs a browser")
    if MATHJAX is None or not MATHJAX.exists(): pytest.skip("sphinx-mathjax-offline (a dev dependency) is not installed: no MathJax to typeset with")
    book = tmp_path_factory.mktemp("book")
    for name, (html, source, _) in PAGES.items():
        (book / f"{name}.html").write_text(html)
        if source: (book / "_sources").mkdir(exist_ok=True); (book / "_sources" / f"{name}.ipynb").write_text(source)
    names = list(PAGES)
    toc = book / "_toc.yml"
    toc.write_text(f"format: jb-book\nroot: {names[0]}\nchapters:\n" + "".join(f"  - file: {n}\n" for n in names[1:]) + "  - file: missing_page\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = check_pages.main(["--html", str(book), "--toc", str(toc), "--chromium", chromium])
    return status, out.getvalue()


def blocks(text: str) -> dict[str, str]:
    "The report split by page: page name -> its listed problems."
    found, name = {}, None
    for line in text.splitlines():
        if line.startswith("FAIL "): name = line[5:].removesuffix(".html"); found[name] = ""
        elif name and line.startswith("  - "): found[name] += line[4:] + "\n"
    return found


def test_report_fails_the_run(report):
    status, text = report
    clean = sum(v[2] is None for v in PAGES.values())
    assert status == 1 and f"{len(PAGES) + 1} pages, {len(PAGES) + 1 - clean} with problems" in text, text


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_gets_its_verdict(report, name):
    expected, found = PAGES[name][2], blocks(report[1])
    if expected is None: assert name not in found, f"clean page {name} flagged: {found.get(name)}"
    else: assert expected in found.get(name, ""), f"{name}: expected {expected!r} in {found.get(name)!r}"


def test_missing_page_is_a_problem(report):
    assert "no page" in blocks(report[1]).get("missing_page", "")


def test_toc_pages_lists_root_then_files(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: nbs/index\nparts:\n  - caption: A\n    chapters:\n      - file: nbs/a.ipynb\n"
                   "        sections:\n          - file: nbs/b\n")
    assert check_pages.toc_pages(toc) == ["nbs/index", "nbs/a", "nbs/b"]
    assert check_pages.toc_pages(ROOT / "_toc.yml")[0] == "nbs/index"


@pytest.mark.parametrize("src, has", [("$x$", True), ("$$\na=b\n$$", True), ("```{math}\nx\n```", True),
                                      ("costs $5 or $10", False), ("`$HOME` and `$PATH`", False), ("a $ b", False),
                                      ("```\n$x$\n```", False), ("\\begin{align}x\\end{align}", True)])
def test_source_has_math(src, has):
    assert check_pages.source_has_math(src) is has


def test_build_problems(tmp_path):
    "A failed notebook's report, a glue key the prose shows but nothing glued, and a record from another build."
    build, results = tmp_path / "_build", tmp_path / "results"
    (build / "html" / "reports" / "nbs").mkdir(parents=True); (build / "jupyter_execute" / "nbs").mkdir(parents=True); results.mkdir()
    source = json.dumps({"cells": [{"cell_type": "markdown", "source": ["A {glue:text}`em.ratio.mean:.2g` and {glue:text}`em.gone`; "
                                                                        "quoted: ``{glue:text}`other.x` ``"]}]})
    (build / "jupyter_execute" / "nbs" / "p.glue.json").write_text(json.dumps({"em.ratio.mean": {}}))
    (build / "build_id").write_text("B2\n")
    (results / "em.json").write_text(json.dumps({"build": "B1", "ratio": {"mean": 0.1}}))
    assert check_pages.build_problems(build, "nbs/q", "", results) == []
    (build / "html" / "reports" / "nbs" / "p.err.log").write_text("Traceback ...\nAssertionError: ci_low > 0")
    text = "\n".join(check_pages.build_problems(build, "nbs/p", source, results))
    for expected in ["its notebook failed", "AssertionError: ci_low > 0", "1 glued value(s) the prose shows were never glued",
                     "'em.gone'", "em.json is not from this build (build 'B1', this build 'B2')"]:
        assert expected in text, f"{expected!r} not in:\n{text}"
    (results / "em.json").write_text(json.dumps({"build": "B2"}))
    assert "not from this build" not in "\n".join(check_pages.build_problems(build, "nbs/p", source, results))
