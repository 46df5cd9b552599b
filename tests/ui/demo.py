"""Small, realistic-looking predictions for the browser test, made in seconds without a model.

Toy nut images (:func:`dhkd.data.toy.make_sample`) with their exact defect masks; the "anomaly map"
of an image is its blurred difference from its defect-free twin plus smooth noise, so the
threshold explorer has something sensible to show. Or, with ``run_dir``, a real evaluated run.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def demo_predictions(n_good: int = 6, n_per_defect: int = 3, size: int = 128, seed: int = 0):
    """(Predictions, uint8 images (N, 3, S, S)) for toy nuts: good images first, then defects."""
    from dhkd.run.evaluate import Predictions
    from dhkd.data.toy import TOY_DEFECTS, make_sample

    rng = np.random.default_rng(seed)
    items = [("good", i) for i in range(n_good)]
    items += [(kind, i) for kind in TOY_DEFECTS["nut"] for i in range(n_per_defect)]
    images, maps, masks = [], [], []
    for kind, i in items:
        sample = make_sample("nut", kind, i, seed=seed, image_size=size)
        diff = np.abs(sample.image.astype(np.float32) - sample.clean.astype(np.float32)).mean(2) / 255
        noise = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 6) * 4
        maps.append(ndimage.gaussian_filter(diff, 3) * 8 + 0.05 * noise + 0.1 * rng.random())
        masks.append(np.zeros((size, size), bool) if sample.mask is None else sample.mask)
        images.append(sample.image.transpose(2, 0, 1))
    maps_t = torch.from_numpy(np.stack(maps).astype(np.float32))
    predictions = Predictions(
        maps=maps_t,
        scores=maps_t.flatten(1).amax(1),
        masks=torch.from_numpy(np.stack(masks)),
        labels=torch.tensor([0 if kind == "good" else 1 for kind, _ in items]),
        defect_types=[kind for kind, _ in items],
        paths=[f"toy/nut/test/{kind}/{i:03d}.png" for kind, i in items],
    )
    return predictions, torch.from_numpy(np.stack(images))


def run_predictions(run_dir: str):
    """(Predictions, images) of an evaluated run folder, images read from its data root."""
    from pathlib import Path

    from dhkd.config import read_config
    from dhkd.data import load_split
    from dhkd.run.evaluate import load_predictions
    from dhkd.run.folder import read_run_info

    info = read_run_info(run_dir)
    size = read_config(Path(run_dir) / "config.yaml").data.image_size
    split = load_split(info["data_root"], info["category"], "test", size, progress=False)
    return load_predictions(run_dir), split.images


def fake_run(run_dir, data_root, category: str, image_size: int, seed: int = 0, noise: float = 0.4):
    """An evaluated-run folder (config.yaml, run.json, predictions.npz, metrics.json) for the
    test split in ``data_root``, without training: each map is the blurred ground truth, with a
    random strength per image, plus smooth noise. Enough for notebooks and widgets to open."""
    import json
    from pathlib import Path

    from dhkd import metrics
    from dhkd.config import load_config, save_config
    from dhkd.run.evaluate import normal_threshold
    from dhkd.data import load_split
    from dhkd.run.evaluate import Predictions, save_predictions

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    split = load_split(data_root, category, "test", image_size, progress=False)
    rng = np.random.default_rng(seed)
    masks = split.masks.numpy()
    maps = []
    for mask in masks:
        signal = ndimage.gaussian_filter(mask.astype(np.float32), image_size / 64) * rng.uniform(0.3, 2.0)
        maps.append(signal + noise * ndimage.gaussian_filter(rng.normal(0, 1, mask.shape), image_size / 16) * 8)
    maps_t = torch.from_numpy(np.stack(maps).astype(np.float32))
    predictions = Predictions(maps_t, maps_t.flatten(1).amax(1), split.masks, split.labels,
                              list(split.defect_types), [str(p) for p in split.paths])
    config = load_config("smoke", [f"data.image_size={image_size}", "data.calibration_share=0"])  # nothing held back
    save_config(config, run_dir / "config.yaml")
    _untrained_checkpoint(run_dir, config, category)
    (run_dir / "run.json").write_text(json.dumps({"data_root": str(data_root), "category": category}))
    normal_scores = predictions.scores[predictions.labels == 0]
    (run_dir / "metrics.json").write_text(json.dumps({
        "category": category,
        "image_auroc": metrics.image_auroc(predictions.scores, predictions.labels),
        "pixel_auroc": metrics.pixel_auroc(predictions.maps, predictions.masks),
        "aupro": metrics.aupro(predictions.maps, predictions.masks),
        "threshold": normal_threshold(normal_scores, 1.0, "test"),  # as dhkd evaluate records it for such a run
    }))
    save_predictions(run_dir / "predictions.npz", predictions)
    return run_dir


def _untrained_checkpoint(run_dir, config, category: str) -> None:
    """An untrained smoke student saved as a checkpoint, so that ``dhkd.predict`` can score with the run."""
    from dhkd.run.checkpoint import FORMAT_VERSION, save_checkpoint
    from dhkd.config import to_dict
    from dhkd.run.build import build_model

    model = build_model(config.model, config.train.seed)
    save_checkpoint(run_dir / "checkpoint.pt", {"format": FORMAT_VERSION, "student": model.student.state_dict(),
                                                "config": to_dict(config), "category": category, "epoch": 0})
