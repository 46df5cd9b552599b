"""``make book``: the executed notebooks of a results folder as a static web site.

``make reproduce`` leaves every notebook it ran, outputs included, under
``RESULTS/<data folder>/<profile>/notebooks/`` (:mod:`dhkd.kit.reproduce`). This module lays
them out as one site with `mkdocs-jupyter <https://github.com/danielfrg/mkdocs-jupyter>`_ (MkDocs,
Material theme): a home page, notebooks 01 and 02, a section per category with 03-06, notebook 07
and the kit's account of the method (docs/method.md). Figures are inlined in the pages; the
widgets' last state (what papermill saved in the notebooks' metadata) is embedded in them.

``RESULTS`` is one results folder (the one holding ``notebooks/``) or a folder above several
(``results/``, where each ``<data>/<profile>/`` becomes a section of its own).

The site is built in a new folder beside the output folder, then moved into place. An existing
output folder is replaced only when the marker file a previous build wrote (:data:`MARKER`)
lists every file in it, unchanged; anything else there is left alone and the build refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhkd.errors import DhkdError
from dhkd.io import atomic_write_json
from dhkd.kit.reproduce import ALL_NOTEBOOKS, ONCE, PER_CATEGORY, REPO, TABLES_NOTEBOOK

MARKER = ".dhkd-book.json"
SITE_NAME = "DHKD notebooks"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
METHOD = REPO / "docs/method.md"
METHOD_PAGE = "method/index.md"  # docs/method.md's page in the site
_LINK = re.compile(r"\[([^\]]*)\]\(((?:\d\d_\w+\.ipynb)|(?:\.\./docs/method\.md))\)")


@dataclass
class Folder:
    """The executed notebooks of one results folder (``RESULTS/<data>/<profile>``)."""

    results: Path
    prefix: str  # where its pages go in the site: "" for a book of one folder, else "<data>/<profile>/"
    once: list[str] = field(default_factory=list)  # top-level notebooks found: 01, 02, 07
    categories: dict[str, list[str]] = field(default_factory=dict)  # category -> 03-06 found

    @property
    def label(self) -> str:
        return f"{self.results.parent.name} · {self.results.name}"

    def entries(self) -> list[tuple[str, Path, str | None]]:
        """(site path, executed notebook, its category or None) of each notebook page, in reading order."""
        notebooks = self.results / "notebooks"
        entries = [(f"{self.prefix}{name}", notebooks / name, None) for name in self.once if name in ONCE]
        for category, names in self.categories.items():
            entries += [(f"{self.prefix}{category}/{name}", notebooks / category / name, category) for name in names]
        return entries + [(f"{self.prefix}{name}", notebooks / name, None) for name in self.once if name == TABLES_NOTEBOOK]

    def pages(self) -> dict[str, Path]:
        """Site path of each notebook page -> its executed notebook, in reading order."""
        return {page: path for page, path, _ in self.entries()}

    def missing(self) -> list[str]:
        found = set(self.once) | {n for names in self.categories.values() for n in names}
        return [n for n in ALL_NOTEBOOKS if n not in found]


def find_folders(results: Path) -> list[Folder]:
    """The results folders at or below ``results`` (``results``, ``results/<profile>`` or
    ``results/<data>/<profile>``) with executed notebooks."""
    from dhkd.data import MVTEC_CATEGORIES

    results = Path(results)
    candidates = [results] if (results / "notebooks").is_dir() else sorted(
        p.parent for pattern in ("*/notebooks", "*/*/notebooks") for p in results.glob(pattern) if p.is_dir())
    folders = []
    for path in candidates:
        notebooks = path / "notebooks"
        once = [n for n in (*ONCE, TABLES_NOTEBOOK) if (notebooks / n).is_file()]
        found = {p.name: [n for n in PER_CATEGORY if (p / n).is_file()] for p in notebooks.iterdir() if p.is_dir()}
        found = {c: names for c, names in found.items() if names}
        order = [c for c in MVTEC_CATEGORIES if c in found] + sorted(set(found) - set(MVTEC_CATEGORIES))
        if once or found:
            folders.append(Folder(path, "", once, {c: found[c] for c in order}))
    if len(folders) > 1:
        for folder in folders:
            folder.prefix = f"{folder.results.parent.name}/{folder.results.name}/"
    return folders


# ----------------------------------------------------------------------------- the pages


def _heading(markdown: str) -> str | None:
    return next((line[2:].strip() for line in markdown.splitlines() if line.startswith("# ")), None)


def notebook_title(path: Path) -> str:
    """The notebook's first level-1 heading (its page title), else its file name."""
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            heading = _heading("".join(cell["source"]))
            if heading:
                return heading
    return path.stem


def _html(site_path: str) -> str:
    return str(Path(site_path).with_suffix(".html"))


def _relative(target: str, page: str) -> str:
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


def rewrite_links(notebook: dict[str, Any], page: str, targets: dict[str, str]) -> dict[str, Any]:
    """Links between the notebooks (``NN_name.ipynb``) and to ``../docs/method.md`` point at their pages
    in the site (``targets``: link target -> site path); a link to a page the book lacks becomes plain text."""

    def replace(match: re.Match) -> str:
        target = targets.get(match.group(2))
        return f"[{match.group(1)}]({_relative(_html(target), page)})" if target else match.group(1)

    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = _LINK.sub(replace, source)
    return notebook


def _targets(folder: Folder, category: str | None, with_method: bool) -> dict[str, str]:
    """Where a notebook of ``folder`` (of ``category``, or a top-level one) finds each notebook it links to."""
    targets = {name: f"{folder.prefix}{name}" for name in folder.once}
    shown = category if category is not None else next(iter(folder.categories), None)
    for name in folder.categories.get(shown, []) if shown is not None else []:
        targets[name] = f"{folder.prefix}{shown}/{name}"
    if with_method:
        targets["../docs/method.md"] = METHOD_PAGE
    return targets


def _settings_line(folder: Folder) -> str:
    """What produced the folder's notebooks, from its per-category JSON files (make reproduce's)."""
    for category in folder.categories:
        try:
            result = json.loads((folder.results / f"{category}.json").read_text())
        except (OSError, ValueError):
            continue
        parameters = result.get("parameters", {})
        return (f"Run by `make reproduce` on {parameters.get('dataset', '?')} (`{parameters.get('data', '?')}`), profile "
                f"**{result.get('profile', '?')}**, teacher **{result.get('teacher', '?')}**, "
                f"{result.get('epochs', '?')} epochs, device **{result.get('device', '?')}**; "
                f"finished {result.get('finished_at', '?')}.")
    return "Run by `make reproduce`."


def home_page(folders: list[Folder], with_method: bool) -> str:
    lines = [f"# {SITE_NAME}", "",
             "The DHKD kit's notebooks as `make reproduce` ran them, outputs included: figures, tables and the "
             "widgets' last state (the widgets show what they showed when the notebook ran; a live kernel, in "
             "JupyterLab, makes them interactive again). Made by `make book`.", ""]
    for folder in folders:
        if len(folders) > 1:
            lines += [f"## {folder.label}", ""]
        lines += [_settings_line(folder), ""]
        for page, path, category in folder.entries():
            where = f" (category {category})" if category else ""
            lines.append(f"- [{notebook_title(path)}]({page}){where}")  # MkDocs points it at the page
        missing = folder.missing()
        if missing:
            lines += ["", f"Not run yet: {', '.join(missing)} (`make reproduce` runs them)."]
        lines.append("")
    if with_method:
        lines += [f"The method, every setting and where it lives in the kit: [the method]({METHOD_PAGE}).", ""]
    return "\n".join(lines)


def _nav(folder: Folder) -> list[Any]:
    """Notebooks 01 and 02, a section per category with 03-06, then 07."""
    entries: list[Any] = []
    for page, path, category in folder.entries():
        if category is None:
            entries.append({notebook_title(path): page})
        else:
            if not entries or f"Category {category}" not in entries[-1]:
                entries.append({f"Category {category}": []})
            entries[-1][f"Category {category}"].append({notebook_title(path): page})
    return entries


def mkdocs_config(folders: list[Folder], docs: Path, site: Path, with_method: bool) -> dict[str, Any]:
    from nbconvert import HTMLExporter

    nav: list[Any] = [{"Home": "index.md"}]
    if len(folders) == 1:
        nav += _nav(folders[0])
    else:
        nav += [{folder.label: _nav(folder)} for folder in folders]
    if with_method:
        nav.append({_heading(METHOD.read_text()) or "The method": METHOD_PAGE})
    return {
        "site_name": SITE_NAME,
        "docs_dir": str(docs),
        "site_dir": str(site),
        "use_directory_urls": False,  # page.html, not page/index.html: the site also works from file://
        "strict": True,  # a broken link or a missing page stops the build
        "theme": {"name": "material", "font": False,  # no web fonts fetched from elsewhere
                  "features": ["navigation.sections", "navigation.expand"]},
        "plugins": ["search", {"mkdocs-jupyter": {
            "include": ["*.ipynb"], "execute": False, "include_source": True,  # the .ipynb beside its page
            "include_requirejs": True,  # the widgets' HTML manager loads with RequireJS
            "custom_mathjax_url": HTMLExporter().mathjax_url,  # the notebooks' $math$, as nbconvert's HTML loads it
            "cache": False}}],
        "extra": {"generator": False},
        "nav": nav,
    }


# ----------------------------------------------------------------------------- the output folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def check_output(out: Path) -> dict[str, str] | None:
    """``None`` when ``out`` is free (missing or empty); the files of the book there when a previous
    build wrote every one of them (its marker lists them, unchanged); otherwise refuses."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DhkdError(f"{out} exists and is not a folder", "give BOOK=a folder for the book (--out)")
    if not out.exists() or not any(out.iterdir()):
        return None
    try:
        made = json.loads((out / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DhkdError(f"{out} is not empty and was not made by make book (it has no {MARKER})",
                        "move it away, or give BOOK=another folder (--out)") from None
    foreign = [p.relative_to(out).as_posix() for p in _files(out) if p != out / MARKER and
               (p.is_symlink() or made.get(p.relative_to(out).as_posix()) != _digest(p))]
    if foreign:
        raise DhkdError(f"{out} holds {len(foreign)} file(s) make book did not write or that changed since, "
                        f"e.g. {', '.join(foreign[:3])}", f"move them out of {out}, or give BOOK=another folder (--out)")
    return made


def _remove_book(out: Path) -> None:
    """Remove a previous book, file by file (only after :func:`check_output` accepted it)."""
    for path in _files(out):
        path.unlink()
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    out.rmdir()


def check_location(out: Path, results: Path) -> None:
    """The book goes inside the checkout or inside the results folder given, never onto or among the results."""
    roots = (REPO.resolve(), results.resolve())
    if not any(out == root or root in out.parents for root in roots):
        raise DhkdError(f"the book would go to {out}, outside the kit's folder {REPO} and the results folder {results}",
                        "give BOOK=a folder inside either (default build/book)")
    if out in roots:
        raise DhkdError(f"the book cannot replace {out}", "give BOOK=a folder of its own, e.g. build/book")
    for folder in find_folders(results):
        made = folder.results.resolve()
        if out == made or out in made.parents or made / "notebooks" in (out, *out.parents):
            raise DhkdError(f"the book would go among the results in {made}",
                            f"give BOOK=a folder of its own, e.g. build/book or {made / 'book'}")


# ----------------------------------------------------------------------------- the build


@dataclass
class Book:
    out: Path
    pages: list[str]  # site paths of the pages (HTML), in the navigation's order
    bytes: int
    seconds: float
    missing: dict[str, list[str]]  # results folder -> notebooks not executed there


def build_book(results: str | Path, out: str | Path, say=print) -> Book:
    """Render the executed notebooks under ``results`` into a static site in ``out``."""
    started = time.perf_counter()
    results = Path(results)
    out = Path(out).resolve()
    how = "run `make reproduce` first, then `make book` (or give RESULTS=the folder make reproduce wrote)"
    if not results.is_dir():
        raise DhkdError(f"no executed notebooks: the results folder {results} does not exist", how)
    folders = find_folders(results)
    if not folders:
        raise DhkdError(f"no executed notebooks in {results} (make reproduce writes them to "
                        "RESULTS/<data>/<profile>/notebooks/)", how)
    check_location(out, results)
    check_output(out)
    try:
        import mkdocs_jupyter  # noqa: F401 - the plugin, found by name by MkDocs
        from mkdocs.commands.build import build
        from mkdocs.config import load_config
    except ImportError:
        raise DhkdError("make book needs MkDocs and mkdocs-jupyter, which are not installed",
                        f"run `{sys.executable} -m pip install -e '.[book]'` (make setup does)") from None
    import yaml

    with_method = METHOD.is_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix=f".{out.name}-new-", dir=out.parent))  # beside out: moved into place at the end
    try:
        with tempfile.TemporaryDirectory(prefix="dhkd-book-") as staging:
            docs = Path(staging) / "docs"
            docs.mkdir()
            for folder in folders:
                for page, path, category in folder.entries():
                    notebook = rewrite_links(json.loads(path.read_text()), page, _targets(folder, category, with_method))
                    (docs / page).parent.mkdir(parents=True, exist_ok=True)
                    (docs / page).write_text(json.dumps(notebook))
            (docs / "index.md").write_text(home_page(folders, with_method))
            if with_method:
                (docs / METHOD_PAGE).parent.mkdir()
                shutil.copyfile(METHOD, docs / METHOD_PAGE)
            config_file = Path(staging) / "mkdocs.yml"
            config_file.write_text(yaml.safe_dump(mkdocs_config(folders, docs, site, with_method), sort_keys=False))
            say(f"book: {sum(len(f.pages()) for f in folders)} notebooks from {results} …", flush=True)
            _mkdocs_build(build, load_config(str(config_file)))
        site.chmod(0o755)  # mkdtemp's folder is private; the site is for reading
        _check_widget_state(folders, site)
        files = {p.relative_to(site).as_posix(): _digest(p) for p in _files(site)}
        atomic_write_json(site / MARKER, {"made_by": "make book (dhkd book)", "results": str(results), "files": files})
        if check_output(out) is not None:
            _remove_book(out)
        elif out.exists():
            out.rmdir()
        site.rename(out)
    except BaseException:
        shutil.rmtree(site, ignore_errors=True)  # made by this build a moment ago
        raise
    pages = ["index.html"] + [_html(p) for f in folders for p in f.pages()] + ([_html(METHOD_PAGE)] if with_method else [])
    size = sum(p.stat().st_size for p in _files(out))
    return Book(out, pages, size, time.perf_counter() - started, {str(f.results): f.missing() for f in folders})


def _mkdocs_build(build, config) -> None:
    """MkDocs' build, its warnings collected: in strict mode any of them fails the build, with them as the message."""
    import logging

    from mkdocs.exceptions import MkDocsException

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect, logger = Collect(), logging.getLogger("mkdocs")
    logger.addHandler(collect)
    propagate, logger.propagate = logger.propagate, False
    try:
        build(config)
    except MkDocsException as error:
        raise DhkdError(f"MkDocs could not build the book: {error}; " + "; ".join(collect.messages)) from None
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate


def _check_widget_state(folders: list[Folder], site: Path) -> None:
    """Every notebook that saved widget state has it embedded in its page."""
    for folder in folders:
        for page, path in folder.pages().items():
            if "widgets" in json.loads(path.read_text()).get("metadata", {}):
                if WIDGET_STATE not in (site / _html(page)).read_text():
                    raise DhkdError(f"the page of {path} lacks the widget state the notebook saved",
                                    "the installed mkdocs-jupyter renders widgets differently: pip install -e '.[book]'")


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``dhkd book``'s options (what ``make book`` passes)."""
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="a results folder of make reproduce, or a folder above several (default results)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "book",
                        help="the site's folder, inside the checkout or the results folder (default build/book)")


def run_command(args: argparse.Namespace) -> int:
    book = build_book(args.results, args.out)
    try:
        shown = book.out.relative_to(Path.cwd())
    except ValueError:
        shown = book.out
    print(f"book: {len(book.pages)} pages, {book.bytes / 1e6:.1f} MB, built in {book.seconds:.1f} s -> {shown}/; "
          f"open {shown}/index.html (search needs a web server: python -m http.server -d {shown})")
    for results, missing in book.missing.items():
        if missing:
            print(f"  {results}: not run yet: {', '.join(missing)} (make reproduce runs them)")
    return 0
