"""Helpers of the browser test: a throw-away JupyterLab server, a notebook to open in it, and
a headless Chromium (Debian's ``chromium``) driven by Playwright."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("DHKD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# JupyterLab's front-end extensions that would talk to the internet or pop up a question.
_DISABLED_EXTENSIONS = {
    "@jupyterlab/apputils-extension:announcements": True,
    "@jupyterlab/extensionmanager-extension": True,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_lab(root_dir: Path, log_path: Path, timeout: float = 120.0) -> Iterator[str]:
    """Run ``jupyter lab`` on loopback serving ``root_dir``; yields the base URL with its token.

    Config, data and runtime folders are private temporary ones (next to ``root_dir``), so the
    user's settings and workspaces neither leak in nor get changed. The server (and its
    kernels) is stopped on exit.
    """
    home = root_dir.parent / "jupyter-home"
    config = home / "config"
    (config / "labconfig").mkdir(parents=True, exist_ok=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps({"disabledExtensions": _DISABLED_EXTENSIONS}))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"),
        "PYTHONPATH": os.pathsep.join([str(root_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MPLBACKEND": "agg",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}", "--ServerApp.port_retries=0",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        command.append("--allow-root")
    log = open(log_path, "w")
    server = subprocess.Popen(command, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {server.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s; see {log_path}")
            time.sleep(0.5)
        yield f"{base}/lab/tree/{{path}}?token={token}"
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (it and its kernels), then SIGKILL if needed."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=10)


def visual_notebook() -> Path | None:
    """The kit's visual-analysis notebook (notebooks/05_*.ipynb), if it exists."""
    found = sorted((REPO / "notebooks").glob("05_*.ipynb"))
    return found[0] if found else None


def widget_notebook(path: Path, run_dir: str | None = None, demo: str = "") -> Path:
    """Write a small notebook showing the threshold explorer and failure browser.

    With ``run_dir`` (an evaluated run folder) the widgets show that run; otherwise toy-nut
    predictions made by ``ui_demo.py`` (a copy of tests/ui/demo.py next to the notebook), called
    with the arguments in ``demo`` (Python source, e.g. ``"size=64"``).
    """
    import nbformat

    shutil.copy(Path(__file__).with_name("demo.py"), path.parent / "ui_demo.py")
    load = (f"predictions, images = run_predictions({run_dir!r})" if run_dir
            else f"predictions, images = demo_predictions({demo})")
    cells = [
        nbformat.v4.new_markdown_cell("# Threshold explorer and failure browser (browser test)"),
        nbformat.v4.new_code_cell(f"from dhkd.notebook import widgets\nfrom ui_demo import demo_predictions, run_predictions\n{load}"),
        nbformat.v4.new_code_cell('explorer = widgets.threshold_explorer(predictions, images, level="image")\nexplorer'),
        nbformat.v4.new_code_cell("browser = widgets.failure_browser(predictions, images)\nbrowser"),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def visual_notebook_copy(source: Path, target: Path, parameters: dict) -> Path | None:
    """``source`` copied to ``target`` with ``parameters`` set in a cell after its parameters
    cell (what papermill does); ``None`` when it has no cell tagged ``parameters``."""
    import nbformat

    notebook = nbformat.read(source, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    if not tagged:
        return None
    cell = nbformat.v4.new_code_cell("\n".join(f"{name} = {value!r}" for name, value in parameters.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(tagged[0] + 1, cell)
    nbformat.write(notebook, target)
    return target
