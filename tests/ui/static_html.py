"""Screenshot a notebook's static HTML export (nbconvert) with its widgets, offline.

nbconvert's HTML loads RequireJS and the widgets' HTML manager from CDNs. Without internet,
point this script at local copies (``npm pack @jupyter-widgets/html-manager@1 requirejs@2``
and unpack them): the requests are answered from those files, everything else external is
refused, and Chromium renders the page as a reader with internet would see it::

    python tests/ui/static_html.py NOTEBOOK.html OUT.png --manager hm/package/dist --requirejs rq/package/require.js
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path


def screenshot(html: Path, out: Path, manager: Path, requirejs: Path, selector: str | None = None) -> int:
    """Render ``html``; returns how many widget views the HTML manager drew."""
    from playwright.sync_api import sync_playwright

    spec = importlib.util.spec_from_file_location("dhkd_ui_jupyter", Path(__file__).with_name("jupyter.py"))
    ui = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ui)

    def answer(route) -> None:
        url = route.request.url
        if "require" in url and url.endswith(".js") and "embed" not in url:
            route.fulfill(path=str(requirejs), content_type="application/javascript")
        elif "html-manager" in url:
            name = url.split("/dist/", 1)[-1].split("?")[0]
            path = manager / name
            route.fulfill(path=str(path)) if path.is_file() else route.abort()
        elif url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(ui.CHROMIUM), args=ui.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1200})
        page.route("**/*", answer)
        page.goto(html.resolve().as_uri())
        page.wait_for_selector(".widget-slider, .jupyter-widgets", timeout=60_000)
        page.wait_for_timeout(2000)
        views = page.locator(".jupyter-widgets").count()
        target = page.locator(selector).first if selector else page
        if selector:
            target.evaluate("e => e.scrollIntoView({block: 'start'})")
        target.screenshot(path=str(out), **({} if selector else {"full_page": True}))
        browser.close()
    return views


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--manager", type=Path, required=True, help="html-manager's dist/ folder")
    parser.add_argument("--requirejs", type=Path, required=True, help="require.js")
    parser.add_argument("--selector", default=None, help="screenshot this element only")
    args = parser.parse_args()
    print(screenshot(args.html, args.out, args.manager, args.requirejs, args.selector), "widget views")
