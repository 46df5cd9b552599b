"""The notebooks: committed clean, and executed headless by `dhkd reproduce` on a tiny set.

One end-to-end run (smoke profile: 64 px, 2 epochs, untrained teacher; 8 training images of
the toy nut) executes every notebook with papermill; the other tests reuse it. About two
minutes on a 2-core CPU, most of it kernel start-ups.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import torch

from dhkd.kit import reproduce
from dhkd.kit import tables
from dhkd.errors import DhkdError
from dhkd.data.toy import generate_toy
from conftest import run_reproduce

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# Parameters a learner sets by hand; make reproduce leaves them at the notebook's default.
BY_HAND = {"solutions", "compare_run", "ablation_dir"}


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


# ----------------------------------------------------------------------------- committed form


def test_the_seven_notebooks_are_there_in_order() -> None:
    assert [p.name for p in notebooks()] == sorted(reproduce.ALL_NOTEBOOKS)
    assert [p.name[:2] for p in notebooks()] == ["01", "02", "03", "04", "05", "06", "07"]
    assert list(reproduce.ALL_NOTEBOOKS) == sorted(reproduce.ALL_NOTEBOOKS), "make reproduce runs them in reading order"


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_and_its_percent_pair_agree(path: Path) -> None:
    """Each notebook is a jupytext pair: NN_name.ipynb and NN_name.py (percent format) with the same
    cells. After editing one of them outside JupyterLab: `jupytext --sync notebooks/*.ipynb`."""
    jupytext = pytest.importorskip("jupytext", reason="jupytext is a dependency of the kit: pip install -e .")
    pair = path.with_suffix(".py")
    assert pair.exists(), f"{pair.name} is missing: run `jupytext --sync {path.relative_to(NOTEBOOKS.parent)}`"
    notebook, text = nbformat.read(path, as_version=4), jupytext.read(pair)
    assert cells(notebook) == cells(text), (
        f"{path.name} and {pair.name} disagree: run `jupytext --sync notebooks/{path.name}` (the newer file wins)")
    assert notebook.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    assert text.metadata.kernelspec == notebook.metadata.kernelspec


def test_every_percent_script_has_its_notebook() -> None:
    scripts = sorted(p.with_suffix(".ipynb").name for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    assert scripts == [p.name for p in notebooks()]
    assert "ipynb,py:percent" in (NOTEBOOKS / "jupytext.toml").read_text()


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_ends_with_a_summary_exercises_links_and_papers(path: Path) -> None:
    markdown = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    assert "## What to take from this" in markdown
    exercises = markdown.split("## Try this", 1)[1].split("---", 1)[0] if "## Try this" in markdown else ""
    assert sum(line.startswith(f"{n}. ") for n in range(1, 6) for line in exercises.splitlines()) >= 2, "2-3 exercises"
    linked = {name for name in reproduce.ALL_NOTEBOOKS if f"]({name})" in markdown}
    index = reproduce.ALL_NOTEBOOKS.index(path.name)
    neighbours = set(reproduce.ALL_NOTEBOOKS[max(0, index - 1):index + 2]) - {path.name}
    assert neighbours <= linked, f"links to the previous and next notebook: {sorted(neighbours - linked)}"
    for paper in ("arxiv.org/abs/2201.10703", "arxiv.org/abs/2103.02907", "arxiv.org/abs/1904.02639", "MVTec AD",
                  "Knowledge-Based Systems 273:110611", "IEEE Transactions on Big Data 10(4)"):
        assert paper in markdown, paper


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_clean_with_a_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip the outputs before committing"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    namespace: dict = {}
    exec(tagged[0].source, namespace)  # plain assignments only
    declared = [name for name in namespace if name != "__builtins__"]
    assert declared == reproduce.declared_parameters(path), "what papermill sees is what the cell assigns"
    defaults = {"profile": "offline", "device": "auto", "data_root": "../data/toy"}
    assert {k: namespace[k] for k in defaults if k in namespace} == {k: v for k, v in defaults.items() if k in namespace}
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.name[:2]} ·")
    source = "\n".join(c.source for c in code)
    assert "from dhkd" in source
    assert nb.metadata.kernelspec.name == "python3"


def names_read(nb: nbformat.NotebookNode) -> set[str]:
    """Every name the notebook's code reads, outside its parameters cell (magics turned into Python first)."""
    import ast

    from IPython.core.inputtransformer2 import TransformerManager

    to_python = TransformerManager().transform_cell
    return {node.id for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
            for node in ast.walk(ast.parse(to_python(c.source)))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_every_declared_parameter_is_used(path: Path) -> None:
    """A notebook's parameters cell holds only what the notebook reads; make reproduce passes it
    those of its parameters (data_root, category, profile, epochs, device, out_dir) that it declares."""
    declared = reproduce.declared_parameters(path)
    unused = sorted(set(declared) - names_read(nbformat.read(path, as_version=4)))
    assert not unused, f"{path.name} declares {unused} but never reads them: drop them from its parameters cell"


def test_reproduce_passes_each_notebook_exactly_its_declared_parameters(tmp_path: Path) -> None:
    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=1, n_test_good=1, n_test_per_defect=1, categories=["nut"], progress=False)
    plan = reproduce.make_plan(data, ["nut"], "smoke", None, "cpu", tmp_path / "results")
    kit = set(plan.parameters("nut"))
    for name in reproduce.ALL_NOTEBOOKS:
        declared = set(reproduce.declared_parameters(NOTEBOOKS / name))
        passed = plan.notebook_parameters(name, "nut")
        assert set(passed) == declared & kit, name
        assert declared - kit <= BY_HAND, f"{name}: {sorted(declared - kit - BY_HAND)} is set by nobody"
        assert not [v for k, v in passed.items() if k in ("data_root", "out_dir") and os.path.isabs(v)], passed
    # the results tables notebook reads only the results folder
    assert plan.notebook_parameters(reproduce.TABLES_NOTEBOOK, "all", out_dir=plan.results) == {
        "out_dir": os.path.relpath(plan.results, NOTEBOOKS)}


def test_a_parameter_the_notebook_does_not_declare_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "executed.ipynb"
    with pytest.raises(reproduce.NotebookFailed, match="does not declare the parameter.s. category"):
        reproduce.execute(NOTEBOOKS / reproduce.TABLES_NOTEBOOK, target, {"category": "nut"}, "(test)")
    assert not target.exists(), "refused before anything ran"


def test_the_widgets_are_imported_plainly() -> None:
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOKS / "05_visual_analysis.ipynb", as_version=4).cells)
    assert "from dhkd.notebook import widgets" in source and "except ImportError" not in source


# ----------------------------------------------------------------------------- headless runs


@pytest.fixture(scope="module")
def tiny(tiny_reproduce: dict) -> dict:
    """The toy nut at 64 px (8 training images), and one full reproduce run on it (conftest.py's,
    shared with the book's browser test)."""
    return tiny_reproduce


@pytest.mark.slow
@pytest.mark.kernel
def test_reproduce_executes_every_notebook(tiny: dict) -> None:
    first = tiny["first"]
    assert first.returncode == 0, first.stdout + first.stderr
    results = tiny["results"]
    executed = sorted(results.glob("notebooks/**/*.ipynb"))
    assert sorted(p.name for p in executed) == sorted(reproduce.ALL_NOTEBOOKS)
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{path.name} did not run every cell"
        absolute = re.compile(r"(?<![.\w/])" + re.escape(str(tiny["root"])))  # relative paths ("../..") are fine
        assert not [c for c in code if absolute.search(c.source)], "papermill injected machine paths"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: {errors}"
        injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
        namespace: dict = {}
        exec(injected[0].source if injected else "", namespace)
        declared = set(reproduce.declared_parameters(NOTEBOOKS / path.name))
        assert set(namespace) - {"__builtins__"} == declared - BY_HAND, f"{path.name}: papermill set other names"
        assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs) or path.name.startswith("07"), (
            f"{path.name} drew no figure")
        text = json.dumps([o for c in code for o in c.outputs if o.output_type != "display_data"] +
                          [o.get("data", {}).get("text/plain", "") for c in code for o in c.outputs])
        assert not absolute.search(text) and str(NOTEBOOKS.parent) not in text, f"{path.name}: outputs carry machine paths"
        for debris in ("Loaded pretrained", "model file path", "it/s]", "\\r"):
            assert debris not in text, f"{path.name}: outputs carry {debris!r}"
        html = path.with_suffix(".html")
        assert html.exists() and html.stat().st_size > 10_000
    assert not list(NOTEBOOKS.glob("kernel-ipc*")), "the run left kernel sockets among the notebooks"
    # progress: which category, which notebook, how long
    assert "[1/1] nut · 03_training.ipynb … " in first.stdout and " s\n" in first.stdout
    assert "epoch 2/2 · stage 2" in first.stdout


@pytest.mark.slow
@pytest.mark.kernel
def test_reproduce_writes_json_tables_and_readme(tiny: dict) -> None:
    assert tiny["first"].returncode == 0, tiny["first"].stderr
    results = tiny["results"]
    result = json.loads((results / "nut.json").read_text())
    assert result["category"] == "nut" and result["profile"] == "smoke" and result["epochs"] == 2
    assert 0.0 <= result["image_auroc"] <= 1.0 and "per_defect" in result
    assert result["parameters"]["dataset"] == "the kit's toy data set" and result["stamp"]
    for name in ("results.md", "results.png", "image_auroc.csv", "pixel_auroc.csv", "aupro.csv"):
        assert (results / "tables" / name).exists(), name
    assert tables.verify(results) == []
    readme = tiny["readme"].read_text()
    assert "profile **smoke**" in readme and "teacher **efficientnet_lite0**" in readme and "device **cpu**" in readme
    assert "| nut " in readme and readme.endswith("## Citation\n")
    with_widget_state = nbformat.read(results / "notebooks" / "nut" / "05_visual_analysis.ipynb", as_version=4)
    html = (results / "notebooks" / "nut" / "05_visual_analysis.html").read_text()
    if "widgets" in with_widget_state.metadata:  # dhkd.notebook.widgets present: its last state is kept in the HTML
        assert "application/vnd.jupyter.widget-state+json" in html


@pytest.mark.slow
@pytest.mark.kernel
def test_second_run_skips_what_is_up_to_date(tiny: dict) -> None:
    assert tiny["first"].returncode == 0, tiny["first"].stderr
    result = tiny["results"] / "nut.json"
    before = result.stat().st_mtime_ns
    second = run_reproduce(*tiny["args"], cwd=tiny["root"])
    assert second.returncode == 0, second.stderr
    assert "[1/1] nut · up to date, skipped" in second.stdout
    assert "01_teacher_features.ipynb up to date, skipped" in second.stdout
    assert "02_architecture.ipynb up to date, skipped" in second.stdout
    assert "07_results_tables.ipynb up to date, skipped" in second.stdout
    assert "…" not in second.stdout  # no notebook ran
    assert result.stat().st_mtime_ns == before


@pytest.mark.slow
@pytest.mark.kernel
def test_force_runs_everything_again(tiny: dict) -> None:
    assert tiny["first"].returncode == 0, tiny["first"].stderr
    dry = run_reproduce(*tiny["args"], "--force", "--dry-run", cwd=tiny["root"])
    assert dry.returncode == 0, dry.stderr
    assert all(f"{name} (would run)" in dry.stdout for name in reproduce.ALL_NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.kernel
def test_a_missing_category_result_is_redone_and_training_resumes(tiny: dict) -> None:
    """As after an interruption: the JSON is written last, so without it the category runs again."""
    assert tiny["first"].returncode == 0, tiny["first"].stderr
    results = tiny["results"]
    history = (results / "runs" / "nut" / "history.csv").read_text()
    (results / "nut.json").unlink()
    again = run_reproduce(*tiny["args"], cwd=tiny["root"])
    assert again.returncode == 0, again.stderr
    ran = [line for line in again.stdout.splitlines() if line.endswith(" s") and "…" in line]
    assert [line.split(" · ")[1].split(" ")[0] for line in ran] == [*reproduce.PER_CATEGORY, reproduce.TABLES_NOTEBOOK]
    assert (results / "runs" / "nut" / "history.csv").read_text() == history  # resumed a finished run: no retraining
    assert (results / "nut.json").exists() and tables.verify(results) == []


@pytest.mark.kernel
def test_a_failing_notebook_names_the_notebook_and_the_cell(tmp_path: Path) -> None:
    """Exit non-zero with "notebook X failed at cell N"; no result JSON is written."""
    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=2, n_test_good=1, n_test_per_defect=1, categories=["nut"], progress=False)
    broken = tmp_path / "notebooks"
    broken.mkdir()
    for path in notebooks():
        shutil.copy(path, broken / path.name)
    nb = nbformat.read(broken / reproduce.ONCE_FIRST, as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"))
    nbformat.write(nb, broken / reproduce.ONCE_FIRST)
    failed = run_reproduce("--data", str(data), "--profile", "smoke", "--device", "cpu", "--out", str(tmp_path / "out"),
                           "--notebooks", str(broken), "--no-html", cwd=tmp_path)
    assert failed.returncode == 1
    assert f"notebook {reproduce.ONCE_FIRST} failed at cell" in failed.stderr
    assert "ValueError: broken on purpose" in failed.stderr
    assert not list((tmp_path / "out").glob("**/nut.json"))


@pytest.mark.slow
def test_bad_inputs_fail_before_any_notebook_runs(tmp_path: Path) -> None:
    missing = run_reproduce("--data", str(tmp_path / "nowhere"), "--profile", "smoke", cwd=tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=1, n_test_good=1, n_test_per_defect=1, categories=["nut"], progress=False)
    unknown = run_reproduce("--data", str(data), "--categories", "bolt", "--profile", "smoke", cwd=tmp_path)
    assert unknown.returncode == 1 and "bolt" in unknown.stderr
    bad_epochs = run_reproduce("--data", str(data), "--profile", "smoke", "--epochs", "two", cwd=tmp_path)
    assert bad_epochs.returncode == 1 and "EPOCHS" in bad_epochs.stderr


# ----------------------------------------------------------------------------- make reproduce DEVICES=


@pytest.mark.slow
@pytest.mark.kernel
def test_devices_spread_categories_over_workers_each_seeing_one_gpu(tmp_path: Path) -> None:
    """DEVICES=0,1 runs two workers at once; every kernel gets its own CUDA_VISIBLE_DEVICES (here
    with DEVICE=cpu, so that the scheduling is tested on a machine without GPUs)."""
    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=6, n_test_good=2, n_test_per_defect=1, categories=["nut"], progress=False)
    generate_toy(data, image_size=64, n_train=4, n_test_good=2, n_test_per_defect=1, categories=["brick"], progress=False)
    done = run_reproduce("--data", str(data), "--profile", "smoke", "--epochs", "2", "--device", "cpu",
                         "--devices", "0,1", "--out", str(tmp_path / "results"), "--no-html", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / "results" / "toy" / "smoke"
    gpus = {}
    for category in ("brick", "nut"):
        recorded = json.loads((results / f"{category}.json").read_text())["parameters"]["cuda_visible_devices"]
        seen_by_kernel = json.loads((results / "runs" / category / "run.json").read_text())["cuda_visible_devices"]
        assert recorded == seen_by_kernel
        gpus[category] = recorded
    assert sorted(gpus.values()) == ["0", "1"], "both workers should have run a category"
    assert reproduce.largest_first(data, ["brick", "nut"]) == ["nut", "brick"]  # 6 training images before 4
    assert "nut: " in done.stdout and "brick: " in done.stdout, "epoch lines name their category"
    assert (results / "tables" / "results.md").exists()


@pytest.mark.slow
def test_devices_are_checked_before_any_notebook_runs(tmp_path: Path) -> None:
    assert reproduce.parse_devices("0, 1 2") == ["0", "1", "2"] and reproduce.parse_devices("") == []
    with pytest.raises(DhkdError, match="GPU numbers"):
        reproduce.parse_devices("cuda:0")
    with pytest.raises(DhkdError, match="twice"):
        reproduce.parse_devices("0,0")
    with pytest.raises(DhkdError, match="contradict"):
        reproduce.check_devices(["0", "1"], "cuda:1")
    if not torch.cuda.is_available():
        with pytest.raises(DhkdError, match="does not exist"):
            reproduce.check_devices(["0"], "auto")
    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=1, n_test_good=1, n_test_per_defect=1, categories=["nut"], progress=False)
    ablation = run_reproduce("--data", str(data), "--profile", "smoke", "--devices", "0", "--device", "cpu",
                             "--ablation", cwd=tmp_path)
    assert ablation.returncode == 1 and "make ablation runs on one device" in ablation.stderr
