"""Update latency of the widgets on an evaluated run: ``python tests/ui/latency.py RUN_DIR``.

Times ``set_threshold`` (counts, ROC point, overlay page: everything an update redraws) for 60
thresholds spread over the slider in random order, at the image and at the pixel level, plus
failure-browser next() and run-comparison image changes. Prints median and max in ms.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def measure(run_dir: str, data_root: str | None = None, steps: int = 60) -> dict[str, dict[str, float]]:
    from dhkd.notebook import widgets
    from dhkd.config import read_config
    from dhkd.data import load_split
    from dhkd.run.evaluate import load_predictions
    from dhkd.run.folder import read_run_info

    info = read_run_info(run_dir)
    size = read_config(Path(run_dir) / "config.yaml").data.image_size
    predictions = load_predictions(run_dir)
    images = load_split(data_root or info["data_root"], info["category"], "test", size, progress=False).images
    rng = np.random.default_rng(0)
    result = {"images": {"n": len(images), "size": size}}

    def summary(durations: list[float]) -> dict[str, float]:
        ms = np.array(durations) * 1000
        return {"median_ms": round(float(np.median(ms)), 1), "max_ms": round(float(ms.max()), 1), "n": len(ms)}

    for level in ("image", "pixel"):
        started = time.perf_counter()
        explorer = widgets.threshold_explorer(predictions, images, level=level)
        build = time.perf_counter() - started
        values = rng.permutation(np.linspace(explorer.slider.min, explorer.slider.max, steps))
        durations = []
        for value in values:
            started = time.perf_counter()
            explorer.set_threshold(float(value))
            durations.append(time.perf_counter() - started)
        result[f"explorer_{level}"] = {**summary(durations), "build_s": round(build, 2)}
        started = time.perf_counter()
        explorer.preset_f1()
        explorer.preset_fpr(0.05)
        result[f"explorer_{level}"]["presets_s"] = round(time.perf_counter() - started, 3)

    browser = widgets.failure_browser(predictions, images)
    browser.kind.value = "worst localisation"
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        browser.next()
        durations.append(time.perf_counter() - started)
    result["failure_browser_next"] = summary(durations)

    comparison = widgets.run_comparison(run_dir, run_dir, data_root)
    durations = []
    for i in rng.integers(0, comparison.n, steps):
        started = time.perf_counter()
        comparison.index.value = int(i)
        durations.append(time.perf_counter() - started)
    result["run_comparison_index"] = summary(durations)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure(*sys.argv[1:]), indent=1))
