"""Browser test: JupyterLab on loopback, a notebook with the widgets opened in headless Chromium.

Runs all cells, drags the threshold slider and presses keys on it, and checks that the counts
shown change (and, at the slider's minimum, say that every image is flagged); then steps the
failure browser. Screenshots go to results/ui/. Run with ``make test-ui`` (``pytest -m ui``).

Needs Debian's ``chromium`` (``apt-get install chromium``) at /usr/bin/chromium (or
$DHKD_CHROMIUM) and the ``playwright`` Python package; never ``playwright install``.
Set $DHKD_UI_RUN to an evaluated run folder to show that run instead of toy predictions.

test_executed_notebook_keeps_the_widget_state needs no browser (only a kernel, ~15 s): it
checks what ``make reproduce``'s static HTML shows of the widgets.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import pytest


def _load(name: str):
    """tests/ui/<name>.py, imported by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"dhkd_ui_{name}", Path(__file__).parent / "ui" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load = _load
    return module


ui = _load("jupyter")
CHROMIUM, CHROMIUM_ARGS, REPO = ui.CHROMIUM, ui.CHROMIUM_ARGS, ui.REPO

RESULTS = REPO / "results" / "ui"
RUN = os.environ.get("DHKD_UI_RUN") or None  # an evaluated run to show instead of the toy predictions
SUFFIX = f"-{Path(RUN).name}" if RUN else ""  # screenshots of a run get its name
COUNTS = re.compile(r"TP=(\d+) FP=(\d+) FN=(\d+) TN=(\d+)")


def shown_counts(page) -> str:
    """The counts text of the threshold explorer as rendered in the page."""
    return page.locator(".dhkd-threshold-explorer .dhkd-stats").first.get_attribute("data-counts") or ""


def wait_for_new_counts(page, before: str, timeout_ms: int = 30_000) -> str:
    page.wait_for_function(
        "before => { const s = document.querySelector('.dhkd-threshold-explorer .dhkd-stats');"
        " return s && s.getAttribute('data-counts') !== before; }",
        arg=before, timeout=timeout_ms,
    )
    return shown_counts(page)


def wait_for_counts(page, pattern: str, timeout_ms: int = 30_000) -> str:
    """Until the shown counts match the JavaScript regular expression ``pattern``."""
    page.wait_for_function(
        "pattern => { const s = document.querySelector('.dhkd-threshold-explorer .dhkd-stats');"
        " return s && new RegExp(pattern).test(s.getAttribute('data-counts')); }",
        arg=pattern, timeout=timeout_ms,
    )
    return shown_counts(page)


def wait_for_idle_kernel(page, timeout_ms: int = 120_000) -> None:
    """Until the status bar says the notebook's kernel is connected and idle (running cells
    earlier, while it still connects, can lose the execution requests)."""
    page.wait_for_function(
        "() => { const t = [...document.querySelectorAll('.jp-StatusBar-Widget')].map(e => e.innerText).join(' ');"
        " return /\\| Idle/.test(t) && !t.includes('No Kernel'); }",
        timeout=timeout_ms,
    )


def run_all_cells(page) -> None:
    """Run > Run All Cells, through the menu as a user would (the app command as a fallback)."""
    try:
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click(timeout=10_000)
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click(timeout=10_000)
    except Exception:  # noqa: BLE001 - a changed menu layout must not hide what the test checks
        page.keyboard.press("Escape")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


@pytest.fixture(scope="module")
def playwright_chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set DHKD_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def prepare_notebook(root: Path, work: Path) -> Path:
    """The kit's visual-analysis notebook (notebooks/05_*.ipynb) with tiny parameters when it
    exists (or $DHKD_UI_NOTEBOOK=generated to skip it), else a generated widgets notebook.

    For the real notebook, without $DHKD_UI_RUN: a 13-image toy nut test set at 128 px and
    two run folders with made-up maps (no training), the second as ``compare_run``.
    """
    source = ui.visual_notebook()
    if source is not None and os.environ.get("DHKD_UI_NOTEBOOK", "visual") == "visual":
        demo = ui.load("demo")
        out_dir = work / "runs"
        if RUN:
            import json

            info = json.loads((Path(RUN) / "run.json").read_text())
            data_root, category, compare = info["data_root"], info["category"], os.environ.get("DHKD_UI_COMPARE")
            out_dir.mkdir()
            (out_dir / category).symlink_to(Path(RUN).resolve(), target_is_directory=True)
        else:
            from dhkd.data.toy import generate_toy

            data_root, category = work / "toy", "nut"
            generate_toy(data_root, image_size=128, n_train=1, n_test_good=4, n_test_per_defect=3,
                         categories=[category], progress=False)
            demo.fake_run(out_dir / category, data_root, category, 128, seed=0, noise=0.4)
            compare = demo.fake_run(work / "other" / "rd", data_root, category, 128, seed=1, noise=0.8)
        parameters = {"data_root": str(data_root), "category": category, "out_dir": str(out_dir)}
        if compare:
            parameters["compare_run"] = str(compare)
        path = ui.visual_notebook_copy(source, root / source.name, parameters)
        if path is not None:
            return path
    return ui.widget_notebook(root / "widgets_ui.ipynb", RUN)


@pytest.mark.ui
@pytest.mark.kernel
def test_threshold_slider_in_jupyterlab(tmp_path: Path, playwright_chromium) -> None:
    started = time.monotonic()
    root = tmp_path / "lab"
    root.mkdir()
    notebook = prepare_notebook(root, tmp_path)
    print(f"\nnotebook: {notebook.name}")
    RESULTS.mkdir(parents=True, exist_ok=True)

    with ui.jupyter_lab(root, tmp_path / "jupyter.log") as url:
        page = playwright_chromium.new_page(viewport={"width": 1400, "height": 1500})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(url.format(path=notebook.name), timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=120_000)
            wait_for_idle_kernel(page)
            run_all_cells(page)

            slider = page.locator(".dhkd-threshold-explorer .widget-slider").first
            slider.wait_for(state="attached", timeout=240_000)
            slider.scroll_into_view_if_needed()
            page.wait_for_function("() => document.querySelector('.dhkd-threshold-explorer .dhkd-stats')", timeout=60_000)
            page.wait_for_selector(".dhkd-failure-browser", state="attached", timeout=120_000)
            # Cells after the widgets (the exercises' solution cells among them) may still be running,
            # and JupyterLab scrolls to each as it runs: drag only once every cell has run.
            page.wait_for_function("() => ![...document.querySelectorAll('.jp-InputPrompt')]"
                                   ".some(p => p.innerText.includes('*'))", timeout=240_000)
            wait_for_idle_kernel(page, 240_000)
            slider.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            before = shown_counts(page)
            assert COUNTS.fullmatch(before), before
            readout_before = slider.locator(".widget-readout").inner_text()

            # Drag the handle a third of the track towards its farther end.
            handle = slider.locator(".noUi-handle").first
            box, track = handle.bounding_box(), slider.locator(".noUi-target").first.bounding_box()
            assert box is not None and track is not None
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            direction = 1 if x < track["x"] + track["width"] / 2 else -1
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + direction * track["width"] / 3, y, steps=12)
            page.mouse.up()
            after_drag = wait_for_new_counts(page, before)
            assert slider.locator(".widget-readout").inner_text() != readout_before
            page.wait_for_timeout(1000)  # let the last of the drag's updates land

            # Keyboard: Home puts the slider at the lowest score (every image flagged), End above
            # every score (nothing flagged).
            # The time from key press to new counts on screen is the round trip a user feels.
            handle.focus()
            round_trips = []
            for _ in range(3):
                pressed = time.monotonic()
                page.keyboard.press("Home")
                at_min = wait_for_counts(page, r" FN=0 TN=0$")
                round_trips.append(time.monotonic() - pressed)
                pressed = time.monotonic()
                page.keyboard.press("End")
                at_max = wait_for_counts(page, r"^TP=0 FP=0 ")
                round_trips.append(time.monotonic() - pressed)
            assert at_min != at_max and COUNTS.fullmatch(at_min).group(1) != "0"
            print(f"key press to new counts in the page: median {1000 * sorted(round_trips)[3]:.0f} ms, "
                  f"max {1000 * max(round_trips):.0f} ms")

            # The F1-optimal preset button, then the screenshots.
            explorer = page.locator(".dhkd-threshold-explorer").first
            explorer.get_by_role("button", name="F1-optimal").click()
            wait_for_new_counts(page, at_max)  # the best F1 flags something
            page.wait_for_timeout(1000)
            explorer.evaluate("e => e.scrollIntoView({block: 'start'})")
            explorer.screenshot(path=str(RESULTS / f"threshold_explorer{SUFFIX}.png"))
            page.screenshot(path=str(RESULTS / f"jupyterlab{SUFFIX}.png"))

            # The failure browser: next changes the image and its caption.
            browser = page.locator(".dhkd-failure-browser").first
            browser.evaluate("e => e.scrollIntoView({block: 'start'})")
            browser.get_by_text("worst localisation").click()
            page.wait_for_function(
                "() => document.querySelector('.dhkd-failure-browser').innerText.includes('worst localisation: ')",
                timeout=30_000)
            caption_before = browser.locator(".dhkd-caption").inner_text()
            browser.get_by_role("button", name=re.compile("next")).click()
            page.wait_for_function(
                "before => { const c = document.querySelector('.dhkd-failure-browser .dhkd-caption');"
                " return c && c.innerText !== before; }", arg=caption_before, timeout=30_000)
            page.wait_for_timeout(500)
            browser.screenshot(path=str(RESULTS / f"failure_browser{SUFFIX}.png"))

            # The run comparison, when the notebook shows one: another image, another caption.
            comparison = page.locator(".dhkd-run-comparison").first
            if comparison.count():
                comparison.evaluate("e => e.scrollIntoView({block: 'start'})")
                caption_before = comparison.locator(".dhkd-caption").inner_text()
                comparison.locator(".noUi-handle").first.focus()
                page.keyboard.press("ArrowRight")
                page.wait_for_function(
                    "before => { const c = document.querySelector('.dhkd-run-comparison .dhkd-caption');"
                    " return c && c.innerText !== before; }", arg=caption_before, timeout=30_000)
                page.wait_for_timeout(500)
                comparison.screenshot(path=str(RESULTS / f"run_comparison{SUFFIX}.png"))

            outputs = page.locator(".jp-OutputArea").all_inner_texts()
            assert not any("Traceback" in text for text in outputs), outputs
        except Exception:
            page.screenshot(path=str(RESULTS / f"failure{SUFFIX}.png"))  # what the page showed when it failed
            raise
        finally:
            page.close()
    assert not errors, errors
    print(f"\nUI test: {time.monotonic() - started:.1f} s; screenshots in {RESULTS}")


@pytest.mark.kernel
def test_executed_notebook_keeps_the_widget_state(tmp_path: Path) -> None:
    """A notebook executed headless (nbclient, as papermill does) keeps each widget's last
    state: the counts (HTML) and the pictures (JPEG bytes) end up in the static HTML."""
    import base64
    import io
    import json

    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    from PIL import Image

    path = ui.widget_notebook(tmp_path / "w.ipynb", demo="n_good=2, n_per_defect=1, size=64")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   store_widget_state=True).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    html_values = [m["state"].get("value", "") for m in state.values() if m["model_name"] == "HTMLModel"]
    counts = [v for v in html_values if "data-counts=" in v]
    assert len(counts) == 1 and COUNTS.search(counts[0])
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    assert len(images) >= 3  # ROC, overlays, failure case
    for model in images:
        assert model["state"]["format"] == "jpeg"
        (buffer,) = model["buffers"]
        with Image.open(io.BytesIO(base64.b64decode(buffer["data"]))) as picture:
            assert picture.format == "JPEG" and picture.width > 50
    page, _ = HTMLExporter().from_notebook_node(notebook)
    assert "application/vnd.jupyter.widget-state+json" in page
    embedded = page.split('<script type="application/vnd.jupyter.widget-state+json">', 1)[1].split("</script>", 1)[0]
    assert "data-counts" in json.dumps(json.loads(embedded))
