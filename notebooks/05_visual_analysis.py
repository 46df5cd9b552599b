# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Visual analysis: where the map lights up, best and worst cases
#
# Numbers hide *how* a detector fails. This notebook overlays the anomaly maps on the test
# images with the ground truth outlined:
#
# - **jet colours**: the anomaly map $M(x)$, one colour range for the whole test set;
# - **green line**: the ground-truth defect;
# - **dashed white line**: the predicted region $\{p : M(x)_p \ge t\}$ at the F1-optimal
#   threshold $t$ of the image scores (notebook 04).
#
# It reads the maps saved by notebook 04 (`predictions.npz` in the run folder); no model runs.

# %% tags=["parameters"]
# Parameters: `make reproduce` (papermill) replaces this cell's values; the defaults run
# offline on a CPU in about a minute, on the toy data set with the offline teacher.
data_root = "../data/toy"     # a folder in MVTec AD's layout; a missing toy category is generated
category = "nut"              # a folder under data_root
profile = "offline"           # paper | rd | offline | smoke | path/to/profile.yaml
epochs = 3                    # None: the profile's own epoch count
device = "auto"               # auto | cpu | cuda | cuda:N
out_dir = "../runs/tutorial"  # run folders go to out_dir/<category>
compare_run = None           # another run folder, for the side-by-side widget
solutions = False             # True: also run the exercises' solution cells

# %%
# %matplotlib inline
from pathlib import Path

from IPython.display import display

from dhkd import metrics
from dhkd.notebook import plots
from dhkd.config import read_config
from dhkd.data import load_split
from dhkd.run.evaluate import load_predictions
from dhkd.data.toy import ensure_category

ensure_category(data_root, category)
run_dir = Path(out_dir) / category
config = read_config(run_dir / "config.yaml")
predictions = load_predictions(run_dir)
test = load_split(data_root, category, "test", config.data.fit(), progress=False)
same_files = [Path(p).parts[-3:] for p in test.paths] == [Path(p).parts[-3:] for p in predictions.paths]
assert same_files, "the test split changed since the evaluation: run 04_evaluation.ipynb again"
threshold, _ = metrics.f1_optimal_threshold(predictions.scores, predictions.labels)
ranked = plots.best_and_worst(predictions, k=4)
print(f"{len(test)} test images, threshold {threshold:.4f}")

# %% [markdown]
# ## Best cases
#
# Defective images with the highest scores, and good images with the lowest.

# %%
plots.overlay_grid(test.images, predictions, ranked["caught"] + ranked["quiet"], threshold,
                   title="highest-scored defective (top) · lowest-scored good (bottom)")

# %% [markdown]
# ## Worst cases
#
# Defective images with the lowest scores (the defects most easily missed) and good images with
# the highest (false alarms). Look for patterns: small or low-contrast defects, defects at the
# image border, normal variation the training set did not cover.

# %%
plots.overlay_grid(test.images, predictions, ranked["missed"] + ranked["false alarms"], threshold,
                   title="lowest-scored defective (top) · highest-scored good (bottom)")

# %% [markdown]
# ## One example per defect type

# %%
kinds = sorted(set(predictions.defect_types) - {"good"})
examples = [predictions.defect_types.index(kind) for kind in kinds]
plots.overlay_grid(test.images, predictions, examples, threshold, columns=min(4, len(examples)))

# %% [markdown]
# ## Interactive explorers
#
# In JupyterLab the widgets below let you move the threshold and browse the failures; in the
# HTML copies written by `make reproduce` they keep their last state.

# %%
from dhkd.notebook import widgets

display(widgets.threshold_explorer(predictions, test.images))
display(widgets.failure_browser(predictions, test.images))
if compare_run:
    display(widgets.run_comparison(run_dir, compare_run, data_root))

# %% [markdown]
# ## Score your own images
#
# A trained run scores any image file or folder, at the image's own size, with
# `dhkd.predict` (the same as `dhkd predict --run RUN INPUT... --out DIR` on the command
# line). Without a threshold it uses the one `dhkd evaluate` recorded in the run: a high
# quantile (`eval.threshold_quantile`) of the scores of **calibration** images, defect-free
# training images that training held back (`data.calibration_share`). That is what a factory
# can calibrate on: good parts, no defect labels. They are neither trained on (the student
# reproduces its training images better than new ones, so their scores would put the threshold
# too low) nor test images: a threshold taken as the 0.99 quantile of the good *test* images
# flags, by construction, about 1 % of exactly those images, so counting its false alarms on
# them measures nothing. On held-out images the count is an estimate of the false-alarm rate on
# new parts, and it can come out above the 1 % the quantile aims at.
#
# Here it scores a few of this category's test images as if they were new ones (point `images`
# at a folder of your own instead), then counts what the recorded threshold flags among all
# the test images, none of which it was chosen on.

# %%
import json

recorded_threshold = json.loads((run_dir / "metrics.json").read_text())["threshold"]
calibration = load_split(data_root, category, "calibration", config.data.fit(), progress=False,
                         calibration_share=config.data.calibration_share) if recorded_threshold["images"] == "calibration" else None
print(f"recorded threshold {recorded_threshold['value']:.4f}: {recorded_threshold['how']}")
assert config.data.calibration_share == 0 or recorded_threshold["images"] == "calibration", \
    "the run held images back, so the threshold must come from them: evaluate it again (notebook 04)"
if calibration is not None:
    shared = {Path(p).resolve() for p in calibration.paths} & {Path(p).resolve() for p in test.paths}
    assert not shared and len(calibration) == recorded_threshold["n_normal"]
    print(f"its {len(calibration)} calibration images are none of the {len(test)} test images")

# %%
import matplotlib.pyplot as plt
from PIL import Image

import dhkd
from dhkd.run.predict import output_names

images = [Path(p) for p in test.paths[:: max(1, len(test.paths) // 6)]][:6]
scored = dhkd.predict(run_dir, images, out=run_dir / "scored", progress=False)
print(f"threshold {scored.attrs['threshold']:.4f} ({scored.attrs['threshold_how']})")
display(scored.assign(path=["/".join(Path(p).parts[-2:]) for p in scored["path"]]))
names = output_names([Path(p) for p in scored["path"]])
fig, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names), 2.6))
for ax, name, (_, row) in zip(axes, names, scored.iterrows()):
    ax.imshow(Image.open(run_dir / "scored" / "overlays" / name))
    ax.set_title(f"{row['score']:.3f} {'flagged' if row['flagged'] else 'ok'}", fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# The recorded threshold over every test image: how many good ones it flags (false alarms) and
# how many defective ones it catches, beside the threshold the same quantile would give if it
# were taken from the good test images themselves, which are then judged on what they were
# fitted to.

# %%
import pandas as pd
import torch

good_test = predictions.scores[predictions.labels == 0]
defective_test = predictions.scores[predictions.labels == 1]
fitted_to_test = float(torch.quantile(good_test.float(), recorded_threshold["quantile"]))
rows = {}
for name, value in {"recorded (calibration images)": recorded_threshold["value"],
                    "fitted to the good test images": fitted_to_test}.items():
    rows[name] = {"threshold": value, "good flagged": int((good_test > value).sum()), "of good": len(good_test),
                  "defective caught": int((defective_test > value).sum()), "of defective": len(defective_test)}
outcome = pd.DataFrame.from_dict(rows, orient="index")  # one row per threshold, counts kept whole
display(outcome.round(4))
nominal = 1 - recorded_threshold["quantile"]
flagged_share = rows["recorded (calibration images)"]["good flagged"] / len(good_test)
print(f"the recorded threshold flags {100 * flagged_share:.0f} % of the good test images; the quantile aims at "
      f"{100 * nominal:.0f} %. Fitted to the good test images, it flags "
      f"{rows['fitted to the good test images']['good flagged']} of them: a number set by the quantile, not measured")
assert rows["fitted to the good test images"]["good flagged"] <= max(1, round(nominal * len(good_test)))

# %% [markdown]
# ## Deploy: one ONNX file for the inspection PC
#
# The PC at the line rarely has the training stack, often no GPU. `dhkd export` (here
# `export_run`, the same as `dhkd export --run RUN --out FILE.onnx`) writes the whole scoring
# path as one ONNX file: normalisation, teacher, the additions this run has on, student, the
# three $1 - \cos$ maps, upsampling, sum, blur and maximum. Its input is uint8 RGB images of
# the run's size, any batch size; its metadata holds that size, the normalisation, the recorded
# threshold and how it was chosen, the kit version and the run's configuration. The export is
# checked with `onnx.checker` and against torch eager before the file is written.

# %%
from dhkd.run.export import export_run

exported = export_run(run_dir, run_dir / "scored" / "model.onnx")
print(f"{exported['path']}: {exported['bytes'] / 2**20:.1f} MiB, opset {exported['opset']}, "
      f"maps within {exported['check']['max_map_difference']:.1g} of torch eager on its check images")

# %% [markdown]
# On the inspection PC only `onnxruntime`, numpy and an image reader are needed: resize the image
# to the size the file states (PIL's bilinear filter, as the kit does), hand it over as uint8,
# read back the map and the score. Here one defective test image is scored that way and compared
# with the map the kit computes in torch (`dhkd predict --engine onnxruntime` or
# `dhkd.predict(..., engine="onnxruntime")` do the same for whole folders, with the same outputs
# as torch).

# %%
import numpy as np
import onnxruntime

from dhkd.run.evaluate import batch_maps, load_model

runtime = onnxruntime.InferenceSession(exported["path"], providers=["CPUExecutionProvider"])
about = runtime.get_modelmeta().custom_metadata_map
_, _, height, width = json.loads(about["dhkd.input"])["shape"]  # ["batch", 3, H, W]
recorded = json.loads(about["dhkd.threshold"])
path = test.paths[int(predictions.labels.argmax())]  # the first defective test image
pixels = np.asarray(Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR))
onnx_map, onnx_score = runtime.run(None, {"images": pixels.transpose(2, 0, 1)[None].copy()})

model, _ = load_model(run_dir, "cpu")
with torch.inference_mode():
    torch_map = batch_maps(model, torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None], config, torch.device("cpu"))
difference = float(np.abs(onnx_map - torch_map.numpy()).max())
print(f"{Path(path).name}: score {onnx_score[0]:.4f} with onnxruntime, {float(torch_map.max()):.4f} with torch; "
      f"largest map difference {difference:.1g}; flagged: {bool(onnx_score[0] > recorded['value'])} "
      f"(threshold {recorded['value']:.4f})")
fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
for ax, shown, title in zip(axes, [pixels, onnx_map[0], np.abs(onnx_map[0] - torch_map[0].numpy())],
                            ["image", "onnxruntime map", "|onnxruntime - torch|"]):
    ax.imshow(shown, cmap=None if shown.ndim == 3 else "jet")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What to take from this
#
# - One colour range for the whole test set makes maps comparable between images: a good
#   image that glows is a false alarm, not a rescaled artefact.
# - The worst cases say more than the averages: small or faint defects, defects at the border
#   and normal variation the training images did not show are the usual misses and false
#   alarms.
# - The F1-optimal threshold is chosen on the test labels; it shows how separable the scores
#   are, not how a deployed detector would do.
# - `dhkd predict`'s threshold is chosen on calibration images, good images held back from
#   training; its false alarms on the good test images are then a measurement, where a
#   threshold fitted to those same images would flag about `1 - quantile` of them by
#   construction.
# - A run deploys as one ONNX file that needs only onnxruntime to score and carries its own
#   input size, normalisation and threshold; its maps match the kit's within 1e-3
#   (`dhkd.run.export.MAP_TOLERANCE`; benchmarks/deploy.md has the measured differences).
#
# ## Questionnaire
#
# 1. *Why one colour range for the whole test set?* Per-image ranges stretch every map to full
#    colour, so a good image would glow as brightly as a defective one.
# 2. *Which threshold does `dhkd predict` use by default?* The one `dhkd evaluate` recorded: a
#    high quantile of the scores of the calibration images, good training images held back from
#    training; no defect labels needed, and no test image is used to choose it.
# 3. *Why is the F1-optimal threshold not an operating point?* It is chosen on the test labels
#    it is then judged on.
#
# ## Try this
#
# Each exercise has a solution cell below (collapsed; it runs when `solutions = True`; the
# solutions write only into folders of their own).
#
# 1. **Move the threshold.** Lower the threshold from the F1-optimal value until every
#    defective image is caught. *What you should see:* the false alarms grow step by step;
#    the table lists how many good images each lower threshold flags.
# 2. **Compare two runs.** Compare this run with notebook 03's exercise-1 run (masking off,
#    `exercise_03_no_masking` next to `out_dir`), or set `compare_run` to any evaluated run
#    folder. *What you should see:* per defect type, image AUROC of both runs side by side; on
#    the toy set and a few epochs the differences are mostly noise.
# 3. **Your own folder.** Score a folder of images with `dhkd.predict(run_dir, folder,
#    threshold=...)`. *What you should see:* one row per image, `flagged` where the score
#    reaches the threshold; a lower threshold flags more of them.
# 4. **A texture.** Train and evaluate `grass` (a toy texture) the same way and look at its
#    worst cases. *What you should see:* the misses are small or faint defects, as on the nut.

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 1: from the F1-optimal threshold down to the lowest defective score, the misses and false alarms.
if solutions:
    best, _ = metrics.f1_optimal_threshold(predictions.scores, predictions.labels)
    defective_scores = predictions.scores[predictions.labels == 1].sort(descending=True).values
    steps = [t for t in [best, *defective_scores.tolist()] if t <= best]
    good_scores = predictions.scores[predictions.labels == 0]
    display(pd.DataFrame([{"threshold": t, "defective missed": int((defective_scores < t).sum()),
                           "good flagged": int((good_scores >= t).sum())} for t in steps]).round(4))

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 2: per defect type, this run beside another evaluated run.
if solutions:
    import json

    other = Path(compare_run) if compare_run else Path(out_dir).parent / "exercise_03_no_masking" / category
    if not (other / "metrics.json").exists():
        print(f"no evaluated run at {other}: run notebook 03's solution 1 (or dhkd evaluate) first")
    else:
        runs = {"this run": run_dir, other.parent.name: other}
        per_defect = {name: {kind: 100 * v["image_auroc"] for kind, v in json.loads((folder / "metrics.json").read_text())["per_defect"].items()}
                      for name, folder in runs.items()}
        display(pd.DataFrame(per_defect).round(1))

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 3: a folder of images scored at two thresholds (a copy of a few test images stands in for yours).
if solutions:
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dhkd-05-images-"))
    for i, path in enumerate(images):
        shutil.copy(path, folder / f"{i:02d}{Path(path).suffix}")
    recorded = dhkd.predict(run_dir, folder, progress=False)
    lower = dhkd.predict(run_dir, folder, threshold=float(recorded["score"].median()), progress=False)
    print(f"{len(recorded)} images: {int(recorded['flagged'].sum())} flagged at the recorded threshold "
          f"{recorded.attrs['threshold']:.4f}, {int(lower['flagged'].sum())} at the median score {lower.attrs['threshold']:.4f}")

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 4: grass, trained and evaluated in a folder of its own, then its worst cases.
if solutions:
    from dhkd.config import training_config
    from dhkd.data.toy import TOY_CATEGORIES
    from dhkd.run.evaluate import evaluate_run
    from dhkd.run.train import train

    if category not in TOY_CATEGORIES and not (Path(data_root) / "grass").is_dir():
        print(f"no grass under {data_root}: this exercise is for the toy data set")
    else:
        ensure_category(data_root, "grass")
        grass_config = training_config(profile, epochs, data_root)
        grass = Path(out_dir).parent / "exercise_05_grass" / "grass"
        train(grass_config, data_root, "grass", grass, device=device, resume="auto", progress=False)
        evaluate_run(grass, data_root, device, progress=False, diagnostics=False)
        grass_predictions = load_predictions(grass)
        grass_test = load_split(data_root, "grass", "test", grass_config.data.fit(), progress=False)
        worst = plots.best_and_worst(grass_predictions, k=4)
        print({key: [grass_predictions.defect_types[i] for i in value] for key, value in worst.items()})
        display(plots.overlay_grid(grass_test.images, grass_predictions, worst["missed"], title="grass: the missed defects"))

# %% [markdown]
# ---
# ← [04 · Evaluation](04_evaluation.ipynb) ·
# [06 · What the trained modules learned](06_what_the_modules_learned.ipynb) →

# %% [markdown]
# ### Papers
#
# - **RD4AD**: Deng & Li, *Anomaly Detection via Reverse Distillation from One-Class Embedding*, CVPR 2022, [arXiv:2201.10703](https://arxiv.org/abs/2201.10703).
# - **Coordinate attention**: Hou, Zhou & Feng, *Coordinate Attention for Efficient Mobile Network Design*, CVPR 2021, [arXiv:2103.02907](https://arxiv.org/abs/2103.02907).
# - **MemAE**: Gong et al., *Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised Anomaly Detection*, ICCV 2019, [arXiv:1904.02639](https://arxiv.org/abs/1904.02639).
# - **MVTec AD**: Bergmann, Fauser, Sattlegger & Steger, *MVTec AD — A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection*, CVPR 2019 ([the data set's page](https://www.mvtec.com/company/research/datasets/mvtec-ad); journal version: IJCV 129:1038–1059, 2021, [doi:10.1007/s11263-020-01400-4](https://doi.org/10.1007/s11263-020-01400-4)).
# - **DHKD**: Tong, Li & Song, *Two-stage reverse knowledge distillation incorporated and Self-Supervised Masking strategy for industrial anomaly detection*, Knowledge-Based Systems 273:110611, 2023; and *Enhanced multi-scale features mutual mapping fusion based on reverse knowledge distillation for industrial anomaly detection and localization*, IEEE Transactions on Big Data 10(4):498–513, 2024.
