"""``make book``: the executed notebooks of a results folder as a static site (dhkd.kit.book).

The browser test builds the book from the tiny make reproduce run that the notebook tests
share (conftest.py's ``tiny_reproduce``: all seven notebooks executed) and opens every page in
headless Chromium from a loopback server. The other tests use hand-made executed notebooks
(no kernel) to check what the build refuses and what it replaces.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from dhkd.errors import DhkdError
from dhkd.kit import book

REPO = Path(__file__).resolve().parents[1]
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def run_book(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dhkd.cli", "book", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def png_outputs(path: Path) -> int:
    notebook = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in notebook.cells if c.cell_type == "code" for o in c.outputs)


# ----------------------------------------------------------------------------- hand-made results


def executed_notebook(title: str, link: str | None = None, widgets: bool = False) -> nbformat.NotebookNode:
    """An executed notebook as papermill leaves one: a heading, a figure output, optionally widget state."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, "PNG")
    figure = nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buffer.getvalue()).decode(),
                                                          "text/plain": "<Figure size 40x30>"})
    text = f"# {title}\n\nSome text." + (f" Next: [{link}]({link})." if link else "")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text),
                                               nbformat.v4.new_code_cell("plot()", execution_count=1, outputs=[figure])])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if widgets:
        notebook.metadata["widgets"] = {WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {}}}
    return notebook


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with two executed notebooks: 01 (linking to 02, absent) and nut's 05 (with widget state)."""
    notebooks = tmp_path / "results" / "toy" / "offline" / "notebooks"
    (notebooks / "nut").mkdir(parents=True)
    nbformat.write(executed_notebook("01 · Teacher", "02_architecture.ipynb"), notebooks / "01_teacher_features.ipynb")
    nbformat.write(executed_notebook("05 · Visual", "01_teacher_features.ipynb", widgets=True),
                   notebooks / "nut" / "05_visual_analysis.ipynb")
    return tmp_path / "results"


def test_no_executed_notebooks_says_how_to_make_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dhkd.cli import main

    (tmp_path / "results" / "toy" / "offline").mkdir(parents=True)  # make reproduce has not run here
    assert main(["book", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "results" / "book")]) != 0
    message = capsys.readouterr().err
    assert "no executed notebooks" in message and "run `make reproduce` first" in message
    assert not (tmp_path / "results" / "book").exists()
    assert main(["book", "--results", str(tmp_path / "nowhere")]) != 0
    message = capsys.readouterr().err
    assert "does not exist" in message and "run `make reproduce` first" in message


def test_the_book_goes_only_inside_the_checkout_or_the_results_folder(results: Path, tmp_path: Path) -> None:
    with pytest.raises(DhkdError, match="outside the kit's folder"):
        book.build_book(results, tmp_path / "elsewhere")
    with pytest.raises(DhkdError, match="cannot replace"):
        book.build_book(results, results)
    for onto in (results / "toy", results / "toy" / "offline", results / "toy" / "offline" / "notebooks" / "book"):
        with pytest.raises(DhkdError, match="among the results"):
            book.build_book(results, onto)
    assert not (tmp_path / "elsewhere").exists()


def test_a_folder_make_book_did_not_write_is_left_alone(results: Path) -> None:
    out = results / "book"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DhkdError, match="not made by make book"):
        book.build_book(results, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_build_then_rebuild_replacing_only_its_own_book(results: Path) -> None:
    out = results / "book"
    built = book.build_book(results, out, say=lambda *a, **k: None)
    assert built.pages == ["index.html", "01_teacher_features.html", "nut/05_visual_analysis.html", "method/index.html"]
    assert all((out / page).is_file() for page in built.pages)
    assert built.missing[str(results / "toy" / "offline")][0] == "02_architecture.ipynb"
    marker = json.loads((out / book.MARKER).read_text())
    assert set(marker["files"]) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {book.MARKER}
    assert WIDGET_STATE in (out / "nut" / "05_visual_analysis.html").read_text()
    first = (out / "01_teacher_features.html").read_text()
    assert "02_architecture.html" not in first and "Next: 02_architecture.ipynb." in first  # absent page: plain text
    assert 'href="../01_teacher_features.html"' in (out / "nut" / "05_visual_analysis.html").read_text()

    (out / "nut" / "mine.txt").write_text("a file of the user's")
    with pytest.raises(DhkdError, match="did not write or that changed"):
        book.build_book(results, out)
    (out / "nut" / "mine.txt").unlink()
    (out / "index.html").write_text("edited by hand")
    with pytest.raises(DhkdError, match="index.html"):
        book.build_book(results, out)
    assert (out / "index.html").read_text() == "edited by hand"
    (out / "index.html").unlink()

    nbformat.write(executed_notebook("02 · Architecture"), results / "toy" / "offline" / "notebooks" / "02_architecture.ipynb")
    again = book.build_book(results, out, say=lambda *a, **k: None)
    assert "02_architecture.html" in again.pages and (out / "index.html").is_file()
    assert 'href="02_architecture.html"' in (out / "01_teacher_features.html").read_text()  # now a link
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".book-new-")], "the build folder was moved in"


def test_several_results_folders_make_a_section_each(results: Path) -> None:
    other = results / "mvtec_ad" / "paper" / "notebooks"
    other.mkdir(parents=True)
    nbformat.write(executed_notebook("01 · Teacher on MVTec AD"), other / "01_teacher_features.ipynb")
    folders = book.find_folders(results)
    assert [f.label for f in folders] == ["mvtec_ad · paper", "toy · offline"]
    config = book.mkdocs_config(folders, Path("docs"), Path("site"), with_method=False)
    assert config["nav"] == [
        {"Home": "index.md"},
        {"mvtec_ad · paper": [{"01 · Teacher on MVTec AD": "mvtec_ad/paper/01_teacher_features.ipynb"}]},
        {"toy · offline": [{"01 · Teacher": "toy/offline/01_teacher_features.ipynb"},
                           {"Category nut": [{"05 · Visual": "toy/offline/nut/05_visual_analysis.ipynb"}]}]}]
    assert book.find_folders(results / "toy" / "offline")[0].prefix == ""  # one results folder: pages at the top


# ----------------------------------------------------------------------------- in the browser


def _load_ui():
    spec = importlib.util.spec_from_file_location("dhkd_ui_jupyter", Path(__file__).parent / "ui" / "jupyter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ui = _load_ui()


@pytest.fixture(scope="module")
def chromium():
    if not ui.CHROMIUM.exists():
        pytest.skip(f"{ui.CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set DHKD_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(ui.CHROMIUM), args=ui.CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.mark.ui
@pytest.mark.slow
@pytest.mark.kernel
def test_every_page_of_the_book_in_chromium(tiny_reproduce: dict, chromium) -> None:
    """make book on the tiny make reproduce run, then every page in headless Chromium: HTTP 200, its
    title, its figures drawn, the widget state embedded, every page in the navigation, no broken link."""
    assert tiny_reproduce["first"].returncode == 0, tiny_reproduce["first"].stderr
    results_root = tiny_reproduce["root"] / "results"
    site = results_root / "book"
    started = time.monotonic()
    done = run_book("--results", str(results_root), "--out", str(site))
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"\n{done.stdout.strip()}  (make book: {time.monotonic() - started:.1f} s with start-up)")

    executed = sorted((tiny_reproduce["results"] / "notebooks").rglob("*.ipynb"))
    assert len(executed) == 7
    expected = {"index.html": None, "method/index.html": None}
    method = book.METHOD.read_text()  # docs/method.md
    titles = {"index.html": book.SITE_NAME,
              "method/index.html": next(line[2:] for line in method.splitlines() if line.startswith("# "))}
    expected.update({p.relative_to(tiny_reproduce["results"] / "notebooks").with_suffix(".html").as_posix(): p
                     for p in executed})
    built = {p.relative_to(site).as_posix() for p in site.rglob("*.html")} - {"404.html"}
    assert built == set(expected), f"pages built {sorted(built)}, expected {sorted(expected)}"

    server, base = serve(site)
    page = chromium.new_page(viewport={"width": 1300, "height": 1000})
    # Only the loopback server: the CDN scripts (MathJax, RequireJS, the widgets' HTML manager) are refused.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    links: set[str] = set()
    article_links: dict[str, set[str]] = {}
    with_widgets = 0
    try:
        for path, notebook in expected.items():
            response = page.goto(base + path)
            assert response is not None and response.status == 200, path
            nav = page.eval_on_selector_all("nav.md-nav--primary a.md-nav__link[href]",
                                            "as => as.map(a => a.href.split('#')[0])")
            missing = [p for p in expected if base + p not in nav]
            assert not missing, f"{path}: the navigation lacks {missing}"
            links.update(page.eval_on_selector_all("a[href]", "as => as.map(a => a.href.split('#')[0])"))
            article_links[path] = set(page.eval_on_selector_all("article a[href]", "as => as.map(a => a.href.split('#')[0])"))
            title = book.notebook_title(notebook) if notebook else titles[path]
            heading = page.locator("article h1").first.inner_text().strip()
            assert page.title().startswith(title) and heading == title, (path, page.title(), heading)
            images = page.eval_on_selector_all("article img", "is => is.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert all(done and width > 0 and height > 0 for done, width, height in images), f"{path}: a figure did not load"
            if notebook is not None:
                assert len(images) >= png_outputs(notebook), f"{path}: {len(images)} figures, the notebook has {png_outputs(notebook)}"
                if "widgets" in nbformat.read(notebook, as_version=4).metadata:
                    state = json.loads(page.locator(f'script[type="{WIDGET_STATE}"]').first.text_content())["state"]
                    views = [json.loads(v)["model_id"] for v in page.eval_on_selector_all(
                        'script[type="application/vnd.jupyter.widget-view+json"]', "ss => ss.map(s => s.textContent)")]
                    assert views and all(v in state for v in views), f"{path}: a widget view without its saved state"
                    with_widgets += 1
            if path.startswith("nut/05"):
                shots = REPO / "results" / "ui"
                shots.mkdir(parents=True, exist_ok=True)
                page.locator("article img").first.scroll_into_view_if_needed()
                page.screenshot(path=str(shots / "book_visual_analysis.png"))
    finally:
        page.close()
        server.shutdown()
    assert with_widgets >= 1, "no page carried widget state: notebook 05 saves its widgets' state"
    assert sum(png_outputs(p) for p in executed) > 0
    inside = sorted({link for link in links if link.startswith(base)})
    assert inside and not [link for link in inside if link[len(base):] not in expected], "a link to no page of the book"
    # Each notebook links to the next one (its own markdown): in the book, to that notebook's page.
    reading = sorted((path for path, notebook in expected.items() if notebook), key=lambda p: Path(p).name)
    for here, following in zip(reading, reading[1:]):
        assert base + following in article_links[here], f"{here} does not link to {following}"
    print(f"book browser test: {len(expected)} pages, {len(inside)} distinct links, {time.monotonic() - started:.1f} s")
