"""``make reproduce`` and ``make ablation``: the notebooks run headless, then the tables.

The notebooks run with papermill in the order a learner reads them: the teacher-features and
architecture notebooks (01, 02; no training needed) once, on the first category; then for
every requested category training (03), evaluation (04), visual analysis (05) and what the
trained modules learned (06); the results tables (07) last. Layout::

    OUT/<data folder>/<profile>/
        <category>.json                    metrics + parameters, written last (the "done" mark)
        runs/<category>/                   the run folder: config, checkpoint, history, predictions
        notebooks/<category>/03_training.ipynb  (+ .html)   executed notebooks
        notebooks/01_teacher_features.ipynb     (+ .html)   ... and 02, 07
        tables/                            image_auroc.csv, pixel_auroc.csv, aupro.csv, results.md, results.png
        ablation/                          with --ablation

A category is *up to date* when its JSON exists and records the same stamp: a hash of the
resolved configuration, the data root, the category, the device and the notebooks' code. Up
to date categories are skipped (``--force`` runs them again), so an interrupted run, started
again, finishes only what is missing; an interrupted training resumes from its checkpoint.

FORCE moves each earlier run aside (``RUN/.replaced-<time>/``, under its lock) rather than deleting it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dhkd.run.background import Periodic
from dhkd.config import (ABLATION_SWITCHES, ABLATION_VARIANTS, Config, check_run, dataset_settings, load_config, to_dict,
                         training_config)
from dhkd.errors import DhkdError
from dhkd.io import atomic_write_json, atomic_write_text, replace_between_markers
from dhkd.run.lock import acquire, release
from dhkd.run.folder import HISTORY_NAME, METRICS_NAME, move_aside, replaced_note

REPO = Path(__file__).resolve().parents[2]  # the checkout: dhkd/kit/reproduce.py -> .
NOTEBOOKS = REPO / "notebooks"
ONCE = ("01_teacher_features.ipynb", "02_architecture.ipynb")  # before any training, on the first category
ONCE_FIRST = ONCE[0]
PER_CATEGORY = ("03_training.ipynb", "04_evaluation.ipynb", "05_visual_analysis.ipynb",
                "06_what_the_modules_learned.ipynb")
TABLES_NOTEBOOK = "07_results_tables.ipynb"
ALL_NOTEBOOKS = (*ONCE, *PER_CATEGORY, TABLES_NOTEBOOK)

class NotebookFailed(DhkdError):
    """A notebook raised; the message names the notebook, the cell and the error."""


# ----------------------------------------------------------------------------- stamps


def notebook_hash(path: Path) -> str:
    """Hash of a notebook's cells (type and source), not of outputs or metadata."""
    cells = json.loads(path.read_text())["cells"]
    content = json.dumps([[c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]]
                          for c in cells])
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def declared_parameters(path: Path) -> list[str]:
    """The names a notebook's cell tagged ``parameters`` assigns, in order (what papermill can set)."""
    import papermill

    return list(papermill.inspect_notebook(str(path)))


def stamp(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _recorded_stamp(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("stamp")
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- execution


def _kernel_manager_class(socket_dir: Path, env: dict[str, str] | None = None):
    """A kernel manager that talks over local sockets (IPC) in ``socket_dir``, not TCP: no network, no
    warning. ``env`` is added to the kernel's environment (``CUDA_VISIBLE_DEVICES`` of a worker)."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(socket_dir / "kernel"))  # the sockets' path prefix (default: the cwd)
            super().__init__(**kwargs)

        async def start_kernel(self, **kwargs: Any) -> None:
            if env:
                kwargs["env"] = {**os.environ, **kwargs.get("env", {}), **env}
            await super().start_kernel(**kwargs)

    return IPCKernelManager


def check_kernel() -> None:
    """The ``python3`` kernel must run this Python (the one with dhkd installed)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise DhkdError("no Jupyter kernel named python3 is installed",
                        f"run `{sys.executable} -m ipykernel install --sys-prefix`") from None
    program = spec.argv[0]
    if program in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return  # jupyter_client replaces these with sys.executable
    if Path(program).resolve() != Path(sys.executable).resolve():
        raise DhkdError(f"the Jupyter kernel python3 runs {program}, not {sys.executable} (which has dhkd installed)",
                        f"run `{sys.executable} -m ipykernel install --sys-prefix`, or remove the other kernel "
                        f"({spec.resource_dir})")


def execute(source: Path, target: Path, parameters: dict[str, Any], label: str, html: bool = True,
            env: dict[str, str] | None = None) -> float:
    """Run one notebook with papermill into ``target`` (and ``target.html``); the seconds it took.
    ``env``: extra environment variables of the notebook's kernel.

    Raises :class:`NotebookFailed` naming the notebook and the cell when a cell raises; the
    executed notebook, error included, stays at ``target`` for a look. A parameter the notebook
    does not declare (:func:`declared_parameters`) is refused before it runs.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    undeclared = sorted(set(parameters) - set(declared_parameters(source)))
    if undeclared:
        raise NotebookFailed(f"notebook {source.name} does not declare the parameter(s) {', '.join(undeclared)} {label}",
                             "pass only the names its cell tagged 'parameters' assigns (declared_parameters)")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # the kernel's debugger warning
    started = time.perf_counter()
    socket_dir = Path(tempfile.mkdtemp(prefix="dhkd-kernel-"))
    try:
        papermill.execute_notebook(str(source), str(target), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, log_output=False, cwd=str(source.parent),
                                   kernel_manager_class=_kernel_manager_class(socket_dir, env),
                                   # quiet kernel logs: the shutdown's interrupt logs a harmless "KeyboardInterrupt"
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except PapermillExecutionError as error:
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        raise NotebookFailed(
            f"notebook {source.name} failed at cell {error.cell_index} (In [{error.exec_count}]: {first_line.strip()!r}) "
            f"{label}: {error.ename}: {error.evalue}",
            f"see the traceback in the executed notebook {target}",
        ) from None
    except Exception as error:  # the kernel died, could not start, ...
        raise NotebookFailed(f"notebook {source.name} failed {label}: {type(error).__name__}: {error}",
                             f"see the partly executed notebook {target}") from None
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    if html:
        export_html(target)
    return time.perf_counter() - started


def export_html(notebook: Path) -> Path:
    """Static HTML beside the executed notebook, with the plots and the widgets' last state."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    atomic_write_text(target, body)
    return target


class HistoryWatcher(Periodic):
    """Prints a line per finished epoch of a training run (from its history.csv) while it trains."""

    final_tick = True

    def __init__(self, history: Path, epochs: int, indent: str = "      ", every: float = 2.0) -> None:
        super().__init__(every)
        self.history, self.epochs, self.indent = history, epochs, indent
        self.printed = 0

    def tick(self) -> None:
        self._poll()

    def _poll(self) -> None:
        try:
            lines = self.history.read_text().strip().splitlines()[1:]
        except OSError:
            return
        for line in lines[self.printed:]:
            fields = line.split(",")
            if len(fields) < 4:
                return
            epoch, stage, loss, seconds = fields[:4]
            print(f"{self.indent}epoch {epoch}/{self.epochs} · stage {stage} · loss {float(loss):.4f} · "
                  f"{float(seconds):.1f} s", flush=True)
            self.printed += 1


# ----------------------------------------------------------------------------- the pipeline


@dataclass
class Plan:
    """Everything fixed before the first notebook runs."""

    data: Path
    categories: list[str]
    profile: str
    epochs: int | None
    device: str
    results: Path
    config: Config
    dataset: str
    notebooks: Path
    data_text: str = ""  # the data root as the user gave it, for the README
    devices: list[str] = field(default_factory=list)  # GPU numbers: one worker per GPU, categories spread over them
    solutions: bool = False  # SOLUTIONS=1: the notebooks also run their exercises' solutions (into exercise_* folders)

    @property
    def runs(self) -> Path:
        return self.results / "runs"

    def parameters(self, category: str, out_dir: Path | None = None) -> dict[str, Any]:
        return {"data_root": str(self.data), "category": category, "profile": self.profile, "epochs": self.epochs,
                "device": self.device, "out_dir": str(out_dir or self.runs)}

    def _with_solutions(self) -> dict[str, Any]:
        """What a stamp adds for SOLUTIONS=1 (nothing otherwise, so earlier stamps stay valid): a run
        without the solutions is not up to date for one that asks for them, nor the other way round."""
        return {"solutions": True} if self.solutions else {}

    def category_stamp(self, category: str) -> str:
        return stamp(config=to_dict(self.config), data=str(self.data), category=category, device=self.device,
                     notebooks={n: notebook_hash(self.notebooks / n) for n in PER_CATEGORY}, **self._with_solutions())

    def once_stamp(self, name: str) -> str:
        return stamp(notebook=notebook_hash(self.notebooks / name), parameters=self.parameters(self.categories[0]),
                     config=to_dict(self.config), **self._with_solutions())

    def notebook_parameters(self, name: str, category: str, out_dir: Path | None = None) -> dict[str, Any]:
        """The :meth:`parameters` that notebook ``name`` declares (:func:`declared_parameters`; the
        others it does not use), with the paths relative to the notebooks' folder (the kernel's
        working directory), so that executed notebooks show no machine paths."""
        declared = declared_parameters(self.notebooks / name)
        parameters = {key: value for key, value in self.parameters(category, out_dir).items() if key in declared}
        if self.solutions and "solutions" in declared:
            parameters["solutions"] = True
        for key in ("data_root", "out_dir"):
            if key in parameters:
                parameters[key] = os.path.relpath(parameters[key], self.notebooks.resolve())
        return parameters


def parse_devices(text: str) -> list[str]:
    """``"0,1,2"`` (or ``"0 1 2"``) -> ``["0", "1", "2"]``; empty -> ``[]``."""
    return _distinct_numbers(text, "DEVICES", "GPU numbers", "a GPU", "DEVICES=0,1,2,3", "list every GPU once")


def check_devices(devices: list[str], device: str) -> list[str]:
    """With DEVICES every worker's kernel sees its one GPU as ``cuda``; DEVICE must not name another."""
    if not devices:
        return devices
    if device not in ("auto", "cuda", "cpu"):
        raise DhkdError(f"DEVICE={device} and DEVICES={','.join(devices)} contradict each other",
                        "with DEVICES each notebook sees one GPU as cuda: leave DEVICE at auto")
    if device != "cpu":
        import torch

        available = torch.cuda.device_count()
        missing = [d for d in devices if int(d) >= available]
        if missing:
            raise DhkdError(f"DEVICES={','.join(devices)}: this machine has {available} CUDA GPU(s), "
                            f"so GPU {', '.join(missing)} does not exist",
                            "list the GPUs that nvidia-smi shows, or leave DEVICES empty to run on one device")
    return devices


def check_device(device: str) -> None:
    """DEVICE must name a device this machine has: a wrong one fails here, not in the first notebook."""
    from dhkd.run.device import resolve_device

    try:
        resolve_device(device)
    except DhkdError as error:
        raise DhkdError(f"DEVICE={device}: {error.what.replace(f'--device {device}', 'it')}",
                        (error.fix or "").replace("--device ", "DEVICE=")) from None


def check_writable(folder: Path) -> None:
    """The results folder (or the nearest folder above it that exists) must be writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise DhkdError(f"cannot write the results to {folder}: {existing} is not a writable folder",
                        "give RESULTS=a folder you can write to (--out)")


def largest_first(data: Path, categories: list[str]) -> list[str]:
    """Categories by training-set size, largest first: long jobs start early, so GPUs finish together."""
    if len(categories) < 2:
        return categories
    return sorted(categories, key=lambda c: -sum(1 for _ in (data / c / "train" / "good").iterdir()))


def make_plan(data: str | Path, categories: list[str] | None, profile: str, epochs: int | None, device: str,
              out: str | Path, notebooks: str | Path = NOTEBOOKS, devices: list[str] | None = None,
              solutions: bool = False) -> Plan:
    """Check the inputs (data, categories, profile, notebooks, kernel) before any work starts."""
    from dhkd.data import MVTEC_CATEGORIES, list_categories, validate_category

    from dhkd.data.dataset_file import as_dataset, is_dataset_file

    data_text = str(data)
    data = Path(data).resolve()
    named = None
    if is_dataset_file(data):
        named = as_dataset(data).name  # DATA=FILE.yaml: one data set, named in the results path and tables
        if categories and categories != [named]:
            raise DhkdError(f"{data_text} describes the one data set {named!r}; CATEGORIES={' '.join(categories)} names others",
                            "leave CATEGORIES empty with a data-set file")
    elif not data.is_dir():
        raise DhkdError(f"data folder {data} does not exist",
                        "give DATA=path/to/mvtec_ad or DATA=FILE.yaml (a data-set file), or leave DATA empty for the toy data set")
    found = list_categories(data)
    chosen = categories or found
    if not chosen:
        raise DhkdError(f"no categories (folders with train/good) in {data}",
                        "give DATA=the folder that holds the category folders (e.g. data/mvtec_ad)")
    for category in chosen:
        validate_category(data, category)
    config = check_run(training_config(profile, epochs, data))
    check_device(device)
    devices = check_devices(devices or [], device)
    results = Path(out).resolve() / (named or data.name) / config.profile
    check_writable(results)
    notebooks = Path(notebooks)
    missing = [n for n in ALL_NOTEBOOKS if not (notebooks / n).exists()]
    if missing:
        raise DhkdError(f"notebooks missing from {notebooks}: {', '.join(missing)}",
                        "restore them with git checkout notebooks/")
    if named is not None:
        dataset = named
    elif all((data / c / ".toy.json").exists() for c in chosen):
        dataset = "the kit's toy data set"
    elif set(chosen) <= set(MVTEC_CATEGORIES):
        dataset = "MVTec AD"
    else:
        dataset = data.name
    return Plan(data=data, categories=list(chosen), profile=profile, epochs=epochs, device=device,
                results=results, config=config, dataset=dataset,
                notebooks=notebooks, data_text=data_text, devices=devices, solutions=solutions)


def run(plan: Plan, force: bool = False, readme: Path | None = None, html: bool = True, dry_run: bool = False,
        say: Callable[..., None] = print) -> list[str]:
    """Run what is not up to date; returns the ``category · notebook`` labels that ran (or would run).

    With ``plan.devices`` the categories run in parallel, one worker per GPU, largest first;
    each worker's kernels see only their GPU (``CUDA_VISIBLE_DEVICES``).
    """
    from concurrent.futures import ThreadPoolExecutor

    from dhkd.kit import tables

    ran: list[str] = []
    n = len(plan.categories)
    exports = ThreadPoolExecutor(max_workers=1)  # HTML copies are written while the next notebook runs
    exported = []
    notebooks_out = plan.results / "notebooks"
    spread = f" spread over GPUs {','.join(plan.devices)}" if plan.devices else ""
    say(f"reproduce: {n} categor{'y' if n == 1 else 'ies'} of {plan.data} ({plan.dataset}), profile {plan.profile} "
        f"(teacher {plan.config.model.teacher.name}, {plan.config.train.epochs} epochs), device {plan.device}{spread} "
        f"-> {plan.results}", flush=True)
    started = time.perf_counter()

    def notebook(index: int, category: str, name: str, target: Path, parameters: dict[str, Any],
                 watch: Path | None = None, gpu: str | None = None) -> None:
        where = f" (GPU {gpu})" if gpu is not None else ""
        label = f"[{index}/{n}] {category} · {name}{where}"
        ran.append(f"{category} · {name}")
        if dry_run:
            say(f"{label} (would run)")
            return
        say(f"{label} …", flush=True)
        env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None
        indent = f"      {category}: " if gpu is not None else "      "
        watcher = HistoryWatcher(watch, plan.config.train.epochs, indent) if watch is not None else nullcontext()
        with watcher:
            seconds = execute(plan.notebooks / name, target, parameters, f"(category {category})", html=False, env=env)
        if html:
            exported.append(exports.submit(export_html, target))
        say(f"{label} … {seconds:.1f} s", flush=True)

    def once(name: str) -> None:
        sidecar = notebooks_out / f"{Path(name).stem}.json"
        wanted = plan.once_stamp(name)
        if not force and _recorded_stamp(sidecar) == wanted:
            say(f"[1/{n}] {plan.categories[0]} · {name} up to date, skipped")
            return
        notebook(1, plan.categories[0], name, notebooks_out / name, plan.notebook_parameters(name, plan.categories[0]),
                 gpu=plan.devices[0] if plan.devices else None)
        if not dry_run:
            atomic_write_json(sidecar, {"stamp": wanted})

    def category_notebooks(index: int, category: str, gpu: str | None = None) -> None:
        result_path = plan.results / f"{category}.json"
        wanted = plan.category_stamp(category)
        if not force and _recorded_stamp(result_path) == wanted:
            say(f"[{index}/{n}] {category} · up to date, skipped")
            return
        if force and not dry_run:
            moved = move_aside(plan.runs / category)  # under the run's lock; never deleted
            if moved is not None:
                say(f"[{index}/{n}] {category} · FORCE: the earlier run moved aside to {_display_path(moved)}; "
                    f"{replaced_note(plan.runs / category)}")
        category_started = time.perf_counter()
        for name in PER_CATEGORY:
            watch = plan.runs / category / HISTORY_NAME if name == PER_CATEGORY[0] else None
            notebook(index, category, name, notebooks_out / category / name, plan.notebook_parameters(name, category),
                     watch, gpu)
        if not dry_run:
            _write_result(plan, category, wanted, time.perf_counter() - category_started, gpu)

    try:
        for name in ONCE:
            once(name)
        if plan.devices:
            _on_workers(plan, category_notebooks)
        else:
            for index, category in enumerate(plan.categories, start=1):
                category_notebooks(index, category)

        sidecar = notebooks_out / f"{Path(TABLES_NOTEBOOK).stem}.json"
        wanted = stamp(notebook=notebook_hash(plan.notebooks / TABLES_NOTEBOOK))
        if dry_run:
            notebook(n, "all", TABLES_NOTEBOOK, notebooks_out / TABLES_NOTEBOOK, {})
            return ran
        if force or ran or _recorded_stamp(sidecar) != wanted or tables.verify(plan.results):
            parameters = plan.notebook_parameters(TABLES_NOTEBOOK, "all", out_dir=plan.results)
            notebook(n, "all", TABLES_NOTEBOOK, notebooks_out / TABLES_NOTEBOOK, parameters)
            atomic_write_json(sidecar, {"stamp": wanted})
        else:
            say(f"[{n}/{n}] all · {TABLES_NOTEBOOK} up to date, skipped")
        exports.shutdown(wait=True)
        for future in exported:
            future.result()  # an export that failed says so here
    finally:
        exports.shutdown(wait=True)
    problems = tables.verify(plan.results)
    if problems:
        raise DhkdError("the results tables do not match the JSON files: " + "; ".join(problems))
    if readme is not None:
        replace_between_markers(readme, tables.readme_section(Path(_display_path(plan.results))), tables.README_MARKERS)
        say(f"wrote the results section of {readme}")
    say(f"done in {time.perf_counter() - started:.1f} s: the tables are in "
        f"{plan.results / tables.TABLES_DIR / tables.MARKDOWN_NAME}"
        + ("" if readme is not None else " (README.md unchanged; make reproduce README=1 writes its results section)"))
    return ran


def _on_workers(plan: Plan, job: Callable[[int, str, str], None]) -> None:
    """``job(index, category, gpu)`` for every category, one worker thread per GPU, largest category
    first. A failure stops new categories from starting; those running finish, then it is raised."""
    import queue
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    free: queue.Queue[str] = queue.Queue()
    for gpu in plan.devices:
        free.put(gpu)

    def on_a_free_gpu(index: int, category: str) -> None:
        gpu = free.get()
        try:
            job(index, category, gpu)
        finally:
            free.put(gpu)

    index_of = {category: index for index, category in enumerate(plan.categories, start=1)}
    with ThreadPoolExecutor(max_workers=len(plan.devices), thread_name_prefix="gpu") as pool:
        futures = [pool.submit(on_a_free_gpu, index_of[c], c) for c in largest_first(plan.data, plan.categories)]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
    for future in futures:
        if not future.cancelled():
            future.result()  # the first failure, with its message


def _write_result(plan: Plan, category: str, wanted: str, seconds: float, gpu: str | None = None) -> None:
    """The category's JSON, written last: the run's metrics plus what produced them."""
    metrics = json.loads((plan.runs / category / METRICS_NAME).read_text())
    where = {"cuda_visible_devices": gpu} if gpu is not None else {}
    metrics.update({
        "parameters": {**plan.parameters(category), "data": plan.data_text, "dataset": plan.dataset, **where},
        "stamp": wanted,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "notebook_seconds": round(seconds, 1),
    })
    atomic_write_json(plan.results / f"{category}.json", metrics)


def _display_path(path: Path) -> str:
    """A path relative to the working directory where it lies below it (README text), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- ablation


def run_ablation(plan: Plan, force: bool = False, say: Callable[..., None] = print,
                 seeds: list[int] | None = None, variants: list[str] | None = None,
                 dry_run: bool = False, readme: Path | None = None) -> list[Path]:
    """Train and evaluate every variant of :data:`ABLATION_VARIANTS` (or the ``variants`` named) per category
    and seed; one table per category with the mean and spread across seeds (default: the profile's
    one seed). A subset (e.g. ``rd all``) fits a short budget; the table then has only those rows.
    ``dry_run`` says which variants would train and which are up to date, and runs nothing.
    ``readme``: also write these tables into that README's ablation section, in a block of its
    own per results folder (:func:`write_ablation_readme`), so tables of several data sets sit
    side by side.

    Resumable: a variant and seed whose JSON records the same stamp is skipped, and a training
    that was stopped resumes from its checkpoint. Layout under ``OUT/<data>/<profile>/ablation/``:
    ``<category>/seed<N>/<variant>.json`` (metrics and diagnostics of every seed),
    ``<category>/seed<N>/runs/<variant>/`` (the run folders), ``<category>.csv`` and ``.md``,
    and ``ablation.md`` with every category.
    """
    from dhkd.kit import tables

    seeds = list(seeds) if seeds else [plan.config.train.seed]
    keys = list(variants) if variants else list(ABLATION_VARIANTS)
    root = plan.results / "ablation"
    written, sections, devices = [], [], set()
    jobs = [(seed, key) for seed in seeds for key in keys]
    if dry_run:
        for category in plan.categories:
            for index, (seed, key) in enumerate(jobs, start=1):
                _, result_path, wanted = _variant_config(plan, category, seed, key)
                done = not force and _recorded_stamp(result_path) == wanted
                say(f"[{index}/{len(jobs)}] {category} · seed {seed} · {ABLATION_VARIANTS[key][0]}: "
                    f"{'up to date' if done else 'would train and evaluate'}")
        return []
    references = tables.load_reference(plan.results)  # make ablation REFERENCE=1 writes them first
    for category in plan.categories:
        results = [_ablation_variant(plan, category, seed, key, index, len(jobs), force, say)
                   for index, (seed, key) in enumerate(jobs, start=1)]
        devices.update(str(result.get("device", plan.device)) for result in results)
        frame = tables.ablation_table(results, reference=references.get(category))
        markdown = tables.ablation_section(results, references.get(category))
        atomic_write_text(root / f"{category}.csv", frame.to_csv(lineterminator="\n"))
        atomic_write_text(root / f"{category}.md", f"# Ablation: {category}\n\n{markdown}\n")
        written += [root / f"{category}.csv", root / f"{category}.md"]
        sections.append(f"## {category}\n\n{markdown}\n")
        say(f"\n{category} ({plan.profile}, teacher {plan.config.model.teacher.name}, "
            f"{plan.config.train.epochs} epochs, seeds {' '.join(map(str, seeds))}):\n{markdown}\n")
    made = (f"Made by `make ablation` on {plan.dataset} (`{plan.data_text}`), profile "
            f"{plan.profile}, teacher {plan.config.model.teacher.name}, device {', '.join(sorted(devices))}, "
            f"{plan.config.data.describe()}, {plan.config.train.epochs} epochs, "
            f"seeds {' '.join(map(str, seeds))}. Every variant starts from RD "
            "(all four additions off) and switches on what its name says. Numbers in percent: mean ± standard "
            "deviation across seeds; Δ is the variant minus RD trained with the same seed, averaged, ± the "
            "standard deviation of that paired difference. *Inert additions*: those whose diagnostics "
            "(dhkd.run.diagnostics) say they barely act, in how many seeds."
            + (f" *{tables.REFERENCE_TITLE}*: the training-free reference on the same teacher, images and split "
               "(benchmarks/reference.py; its seeds draw its coreset), made by `make ablation REFERENCE=1`."
               if references else "") + "\n\n")
    atomic_write_text(root / "ablation.md", "# Ablation\n\n" + made + "\n".join(sections))
    written.append(root / "ablation.md")
    if readme is not None:
        write_ablation_readme(readme, _display_path(plan.results), made + "\n".join(
            section.replace("## ", "#### ", 1) for section in sections))
        say(f"wrote the ablation block for {_display_path(plan.results)} in {readme}")
    return written


ABLATION_NEXT = "<!-- ablation:next -->"


def write_ablation_readme(readme: Path, results: str, body: str) -> None:
    """Replace the README block ``<!-- ablation:RESULTS:start/end -->`` with ``body``; a results
    folder seen for the first time gets a new block just above the ``<!-- ablation:next -->`` line."""
    start, end = f"<!-- ablation:{results}:start -->", f"<!-- ablation:{results}:end -->"
    text = Path(readme).read_text()
    if start not in text:
        if ABLATION_NEXT not in text:
            raise DhkdError(f"{readme} has no {ABLATION_NEXT} line for a new ablation block",
                            "put that line where the ablation tables belong, or leave README empty")
        atomic_write_text(Path(readme), text.replace(ABLATION_NEXT, f"{start}\n{end}\n{ABLATION_NEXT}", 1))
    replace_between_markers(Path(readme), body, (start, end))


def _ablation_variant(plan: Plan, category: str, seed: int, key: str, index: int, total: int, force: bool,
                      say: Callable[..., None]) -> dict[str, Any]:
    """One variant with one seed: trained (or resumed) and evaluated, unless already done."""
    from dhkd.run.evaluate import evaluate_run
    from dhkd.run.train import train

    title = ABLATION_VARIANTS[key][0]
    config, result_path, wanted = _variant_config(plan, category, seed, key)
    folder = result_path.parent
    label = f"[{index}/{total}] {category} · seed {seed} · {title}"
    if not force and _recorded_stamp(result_path) == wanted:
        say(f"{label} up to date, skipped")
        return json.loads(result_path.read_text())
    run_dir = folder / "runs" / key
    if force:
        moved = move_aside(run_dir)
        if moved is not None:
            say(f"{label}: the earlier run moved aside to {_display_path(moved)}; {replaced_note(run_dir)}")
    say(f"{label} …", flush=True)
    started = time.perf_counter()
    with HistoryWatcher(run_dir / HISTORY_NAME, config.train.epochs):
        train(config, plan.data, category, run_dir, device=plan.device, resume="auto",
              progress=False)
    result = evaluate_run(run_dir, plan.data, plan.device, progress=False)
    result.update({"variant": title, "key": key, "seed": seed, "overrides": _variant_overrides(plan, seed, key),
                   "stamp": wanted})
    atomic_write_json(result_path, result)
    say(f"{label} … {time.perf_counter() - started:.1f} s", flush=True)
    return result


def _variant_overrides(plan: Plan, seed: int, key: str) -> list[str]:
    """The ``--set`` overrides that turn the profile into one ablation variant with one seed."""
    overrides = dataset_settings(plan.data) + ([f"train.epochs={int(plan.epochs)}"] if plan.epochs else [])
    overrides += [f"{ABLATION_SWITCHES[s]}={'true' if s in ABLATION_VARIANTS[key][1] else 'false'}" for s in ABLATION_SWITCHES]
    return overrides + [f"train.seed={int(seed)}"]


def _variant_config(plan: Plan, category: str, seed: int, key: str) -> tuple[Config, Path, str]:
    """One variant's configuration, where its JSON goes and the stamp that JSON must record."""
    config = load_config(plan.profile, _variant_overrides(plan, seed, key))
    result_path = plan.results / "ablation" / category / f"seed{seed}" / f"{key}.json"
    return config, result_path, stamp(config=to_dict(config), data=str(plan.data), category=category,
                                      device=plan.device)


def parse_seeds(text: str) -> list[int]:
    """``"111 112 113"`` (or comma-separated) -> ``[111, 112, 113]``; empty -> ``[]`` (the profile's seed)."""
    return [int(s) for s in _distinct_numbers(text, "SEEDS", "whole numbers", "a seed", 'SEEDS="111 112 113"',
                                              "list every seed once")]


def parse_variants(text: str) -> list[str]:
    """``"rd all"`` (or comma-separated) -> ``["rd", "all"]`` in the ablation's own order; empty -> ``[]`` (all six)."""
    items = [item for item in str(text).replace(",", " ").split() if item]
    unknown = [item for item in items if item not in ABLATION_VARIANTS]
    if unknown:
        raise DhkdError(f"ABLATION_VARIANTS names {', '.join(map(repr, unknown))}, which the ablation does not have",
                        f"choose from {' '.join(ABLATION_VARIANTS)}, e.g. VARIANTS=\"rd all\", or leave it empty for all of them")
    return [key for key in ABLATION_VARIANTS if key in items]


def _distinct_numbers(text: str, name: str, what: str, one: str, example: str, fix_twice: str) -> list[str]:
    """A space- or comma-separated list of distinct whole numbers, as the make variables take them."""
    items = [item for item in str(text).replace(",", " ").split() if item]
    if not all(item.isdigit() for item in items):
        raise DhkdError(f"{name} must list {what}, got {text!r}", f"for example {example}")
    if len(set(items)) != len(items):
        raise DhkdError(f"{name} names {one} twice: {text!r}", fix_twice)
    return items


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``dhkd reproduce``'s options (what ``make reproduce`` and ``make ablation`` pass)."""
    parser.add_argument("--data", required=True, type=Path, help="data root in MVTec AD's layout, or a data-set file (.yaml)")
    parser.add_argument("--categories", default="", help="space- or comma-separated; empty: every category found")
    parser.add_argument("--profile", default="paper", help="paper | rd | offline | smoke | path/to/profile.yaml")
    parser.add_argument("--epochs", default="", help="empty: the profile's own")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--devices", default="", help="GPU numbers, e.g. 0,1,2,3: categories run in parallel, "
                        "one per GPU (each notebook sees its GPU as cuda)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--force", action="store_true", help="run up-to-date categories again")
    parser.add_argument("--solutions", action="store_true",
                        help="also run the exercises' solutions (solutions = True; they train into exercise_* folders)")
    parser.add_argument("--readme", type=Path, help="write the results section of this README")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    parser.add_argument("--no-html", action="store_true", help="skip the HTML copies of the executed notebooks")
    parser.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    parser.add_argument("--ablation", action="store_true", help="the ablation instead: RD, each addition, all")
    parser.add_argument("--seeds", default="", help="ablation seeds, e.g. '111 112 113'; empty: the profile's seed")
    parser.add_argument("--variants", default="", help=f"ablation variants, e.g. 'rd all'; empty: all of {' '.join(ABLATION_VARIANTS)}")


def _epochs(text: str) -> int | None:
    text = str(text).strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise DhkdError(f"EPOCHS must be a positive whole number or empty, got {text!r}",
                        "for example EPOCHS=10, or leave EPOCHS empty for the profile's own")
    return int(text)


def check_ablation(plan: Plan) -> None:
    """Every variant of the ablation must be a valid run (the masking one needs two stages)."""
    for key, (title, _) in ABLATION_VARIANTS.items():
        try:
            check_run(load_config(plan.profile, _variant_overrides(plan, plan.config.train.seed, key)))
        except DhkdError as error:
            raise DhkdError(f"the ablation's variant {title!r} cannot run: {error.what}", error.fix) from None


def run_command(args: argparse.Namespace) -> int:
    """``dhkd reproduce``: plan, take the results folder's lock, then run the notebooks or the ablation."""
    lock = None
    try:
        categories = [c for c in args.categories.replace(",", " ").split() if c]
        plan = make_plan(args.data, categories, args.profile, _epochs(args.epochs), args.device, args.out, args.notebooks,
                         parse_devices(args.devices), solutions=args.solutions)
        if args.ablation:
            check_ablation(plan)
        if not args.dry_run:  # one make reproduce / make ablation per results folder at a time
            lock = acquire(plan.results, "results folder")
        if args.ablation:
            if plan.devices:
                raise DhkdError("DEVICES spreads make reproduce over GPUs; make ablation runs on one device",
                                "leave DEVICES empty and pick the GPU with DEVICE=cuda:N")
            run_ablation(plan, args.force, seeds=parse_seeds(args.seeds), variants=parse_variants(args.variants),
                         dry_run=args.dry_run, readme=args.readme)
        else:
            check_kernel()
            run(plan, force=args.force, readme=args.readme, html=not args.no_html, dry_run=args.dry_run)
    except DhkdError as error:
        print(f"reproduce: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reproduce: interrupted; run the same command again to finish what is missing", file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            release(lock)
    return 0
