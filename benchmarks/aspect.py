"""Do a detector's false alarms come from the tiles that resizing distorts most? (lab tool)

    python -m benchmarks.aspect RUN [RUN ...]

MTD's tiles are 0.36 to 2.68 times as wide as they are high; squeezed to a square, each is
stretched by its own factor, so the normal texture reaches the network at many scales. For each
evaluated run (its ``predictions.npz``), this prints, over the defect-free test images, the
Spearman correlation between the image score and the distortion ``|log(width / height)|``, and
the mean distortion of the highest-scoring tenth of them against the rest. A detector that has
learnt one texture scale flags the distorted tiles: a positive correlation.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from dhkd.run.evaluate import load_predictions


def distortion_and_scores(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """``|log(w / h)|`` and image score of every defect-free test image of an evaluated run."""
    p = load_predictions(run)
    normal = [i for i, label in enumerate(p.labels.tolist()) if label == 0]
    distortion = []
    for i in normal:
        with Image.open(p.paths[i]) as image:
            width, height = image.size
        distortion.append(abs(math.log(width / height)))
    return np.array(distortion), p.scores.numpy()[normal]


def summary(run: Path) -> str:
    distortion, scores = distortion_and_scores(run)
    rho = spearmanr(distortion, scores).statistic
    top = scores >= np.quantile(scores, 0.9)
    return (f"{run}: {len(scores)} defect-free test images; Spearman(score, |log(w/h)|) = {rho:+.3f}; "
            f"mean |log(w/h)| of the top-scoring tenth {distortion[top].mean():.3f}, of the rest {distortion[~top].mean():.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aspect", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="evaluated run folders")
    for run in parser.parse_args(argv).runs:
        print(summary(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
