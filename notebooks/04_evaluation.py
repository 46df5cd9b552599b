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
# # 04 · Evaluation: anomaly maps and what the metrics mean
#
# **The anomaly map** (RD4AD). For a test image, per scale, one minus the cosine similarity of
# the teacher's and the student's feature vectors at every position, upsampled bilinearly to
# the image size, summed over the scales and smoothed by a Gaussian ($\sigma = 4$):
#
# $$M(x) = G_\sigma * \sum_{s=1}^{3} \operatorname{Up}\Big(1 - \cos\big(F_s(x)_p,\ S_s(x)_p\big)\Big), \qquad
# \text{score}(x) = \max_p M(x)_p.$$
#
# **Image AUROC**: the probability that a random defective image scores higher than a random
# good one (ties count half), the area under the ROC curve of the image scores:
#
# $$\text{AUROC} = P\big(\text{score}(x^+) > \text{score}(x^-)\big) + \tfrac12 P\big(\text{score}(x^+) = \text{score}(x^-)\big).$$
#
# **Pixel AUROC**: the same over all pixels of all test images pooled, the ground-truth masks
# as labels. With few defective pixels it is dominated by the many easy normal ones, so it is
# high for almost any method.
#
# **AUPRO** (MVTec AD's definition, Bergmann et al.): every connected defect region $C_r$
# counts the same however small it is. For a threshold $t$ with prediction $P_t = \{p :
# M_p \ge t\}$,
#
# $$\text{PRO}(t) = \frac{1}{R}\sum_{r=1}^{R} \frac{|P_t \cap C_r|}{|C_r|}, \qquad
# \text{FPR}(t) = \frac{|P_t \setminus C|}{|\bar C|}, \qquad
# \text{AUPRO} = \frac{1}{0.3}\int_0^{0.3} \text{PRO}\ d\,\text{FPR}.$$
#
# **RD4AD's PRO** (`pro_rd4ad`) is what RD4AD's released code computes instead: a PRO curve per
# anomalous image on 200 thresholds, its FPR axis cut at 0.3 and stretched to [0, 1],
# averaged over images. Papers that copy that code report it; the kit reports both under their
# own names. The metrics live in `dhkd/metrics/`, the evaluation in `dhkd/run/evaluate.py`.

# %% tags=["parameters"]
# Parameters: `make reproduce` (papermill) replaces this cell's values; the defaults run
# offline on a CPU in about a minute, on the toy data set with the offline teacher.
data_root = "../data/toy"     # a folder in MVTec AD's layout; a missing toy category is generated
category = "nut"              # a folder under data_root
profile = "offline"           # paper | rd | offline | smoke | path/to/profile.yaml
epochs = 3                    # None: the profile's own epoch count
device = "auto"               # auto | cpu | cuda | cuda:N
out_dir = "../runs/tutorial"  # run folders go to out_dir/<category>

# %%
# %matplotlib inline
from pathlib import Path

import pandas as pd
import torch
from IPython.display import display

from dhkd import metrics
from dhkd.notebook import plots
from dhkd.method.anomaly_map import anomaly_map, gaussian_blur, image_scores, scale_maps
from dhkd.data import load_split, normalize
from dhkd.run.evaluate import evaluate_run, load_model, load_predictions
from dhkd.data.toy import ensure_category
from dhkd.run.device import resolve_device

ensure_category(data_root, category)
run_dir = Path(out_dir) / category
dev = resolve_device(device)
model, config = load_model(run_dir, dev)
size, sigma = config.data.image_size, config.eval.blur_sigma
test = load_split(data_root, category, "test", size, progress=False)
print(f"trained run out_dir/{category}: profile {config.profile}, teacher {config.model.teacher.name}; "
      f"{len(test)} test images, {int(test.labels.sum())} of them defective")

# %% [markdown]
# ## One defective image, step by step
#
# Before the one-call evaluation, the map of a single defective image (the one with the
# largest defect), built with the same package functions `evaluate_run` calls:
#
# 1. teacher and student features of the image: `model(x)`;
# 2. per scale, $1 - \cos$ at every position, upsampled to the image size:
#    `dhkd.method.anomaly_map.scale_maps`;
# 3. their sum over the scales;
# 4. the Gaussian blur: `dhkd.method.anomaly_map.gaussian_blur`. Its maximum is the image score.
#
# The last panel is notebook 01's detector for the same image, which had no student: the
# distance to the mean of the normal training features, through the same steps.

# %%
defect_sizes = test.masks.flatten(1).sum(1)
index = int(torch.argmax(defect_sizes))
x = normalize(test.images[index:index + 1].to(dev))
with torch.inference_mode():
    teacher_features, student_features = model(x)                    # step 1
    per_scale = scale_maps(teacher_features, student_features, size)  # step 2: (1, 3, S, S)
    summed = per_scale.sum(dim=1)                                     # step 3
    blurred = gaussian_blur(summed, sigma)                            # step 4
    assert torch.allclose(blurred, anomaly_map(teacher_features, student_features, size, sigma))

    train = load_split(data_root, category, "train", size, progress=False)
    normal = [model.teacher(normalize(train.images[i:i + 8].to(dev))) for i in range(0, min(32, len(train)), 8)]
    normal_mean = [torch.cat([n[s] for n in normal]).mean(0, keepdim=True) for s in range(3)]
    teacher_only = anomaly_map(teacher_features, normal_mean, size, sigma)

for s in range(3):
    print(f"scale {s + 1}: features {tuple(teacher_features[s].shape[1:])}, largest 1 − cos {per_scale[0, s].max():.3f}")
print(f"image score (maximum of the blurred map): {image_scores(blurred).item():.4f}; "
      f"teacher-only score {image_scores(teacher_only).item():.4f}")
plots.map_steps(test.images[index], test.masks[index], per_scale[0], summed[0], blurred[0], teacher_only[0])

# %% [markdown]
# Compare the scales: the fine ones resolve small structures (edges, thin scratches), the
# coarse one sees wider regions. The sum keeps what the scales agree on, and the blur removes
# single-position noise, which is why the image score is taken from the blurred map. After a
# short training the student still misses much of the *normal* object too, and the whole part
# glows; with more epochs the glow shrinks towards the defect (exercise 3). Scores mean
# nothing on their own: only their order over the test set does, which is what the metrics
# measure.
#
# ## The whole test split, in one call
#
# `evaluate_run` does the same for every test image (in batches), computes the metrics, writes
# them to the run folder and to `out_dir/<category>.json`, and saves the maps
# (`predictions.npz`) for notebooks 05 and 06. All numbers in percent.

# %%
result = evaluate_run(run_dir, data_root, device, json_path=Path(out_dir) / f"{category}.json", progress=False)
scores = {"image AUROC": result["image_auroc"], "pixel AUROC": result["pixel_auroc"], "AUPRO (MVTec AD)": result["aupro"],
          "PRO (RD4AD's code)": result["pro_rd4ad"]}
display(pd.Series({name: round(100 * value, 1) for name, value in scores.items()}, name="%").to_frame())
print(f"{result['n_test']} test images ({result['n_defective']} defective), profile {result['profile']}, "
      f"teacher {result['teacher']}, {result['epochs']} epochs, device {result['device']}, {result['seconds']:.1f} s")

# %% [markdown]
# And the detector of notebook 01, which needed no training, on the same test split:

# %%
with torch.inference_mode():
    parts = []
    for start in range(0, len(test), 8):
        features = model.teacher(normalize(test.images[start:start + 8].to(dev)))
        parts.append(anomaly_map(features, [m.expand_as(f) for m, f in zip(normal_mean, features)], size, sigma).cpu())
    teacher_maps = torch.cat(parts)
comparison = pd.DataFrame({
    "teacher only (01)": [metrics.image_auroc(image_scores(teacher_maps), test.labels),
                          metrics.pixel_auroc(teacher_maps, test.masks)],
    "trained student": [result["image_auroc"], result["pixel_auroc"]]}, index=["image AUROC", "pixel AUROC"])
display((100 * comparison).round(1))

# %% [markdown]
# ## ROC and PRO curves
#
# The maps of the whole test split were saved with the run (`predictions.npz`), so the curves
# are drawn without running the model again.

# %%
predictions = load_predictions(run_dir)
plots.roc_and_pro(predictions, fpr_limit=0.3)

# %% [markdown]
# ## Image scores
#
# A detector in production needs a threshold. The dashed line is the threshold that
# maximises F1 on this test set (`metrics.f1_optimal_threshold`): a look at separability, not a
# fair operating point (it is chosen on the test labels).

# %%
threshold, f1 = metrics.f1_optimal_threshold(predictions.scores, predictions.labels)
print(f"F1-optimal threshold {threshold:.4f} (F1 {100 * f1:.1f} %)")
plots.score_histogram(predictions, threshold)

# %% [markdown]
# ## Per defect type
#
# Each defect type is scored against the good test images alone: which kinds of defect the
# model finds, and which it misses.

# %%
per_defect = pd.DataFrame(result["per_defect"]).T
display((per_defect[["image_auroc", "pixel_auroc", "aupro"]] * 100).round(1).assign(n=per_defect["n"].astype(int)))
plots.per_defect_bars(result["per_defect"])

# %% [markdown]
# ## What to take from this
#
# - The anomaly map is the loss's cosine distance taken position by position: three scale
#   maps, upsampled, summed and blurred. The image score is its maximum.
# - Image AUROC asks "are defective images scored above good ones?", pixel AUROC "are defect
#   pixels above normal ones?" (easy to make high: most pixels are normal), AUPRO "is every
#   defect region found, small ones too, before many normal pixels light up?".
# - The kit reports MVTec AD's AUPRO and RD4AD's PRO under their own names because papers
#   copy one or the other; compare like with like.
# - A trained student should beat the teacher-only detector; where it does not, the training
#   was too short or the category suits plain feature distances.
#
# ## Try this
#
# 1. **No blur.** In the step-by-step cell, set `blurred = summed` (and delete the `assert`).
#    The map turns speckled in normal regions and the image score, a maximum, grows on good
#    images too. To score the whole split so, set `blur_sigma: 0.0` under `eval:` in the run
#    folder's `config.yaml` and run the evaluation cell again: which metrics drop most?
# 2. **One scale only.** Replace `summed = per_scale.sum(dim=1)` by `summed = per_scale[:, 2]`
#    (the coarsest scale). Is the defect still found, and how sharp is its outline?
# 3. **Train longer.** Run notebook 03 with `epochs = 10` into `out_dir = "../runs/ten"` and
#    this notebook on it: how far do image AUROC and AUPRO move away from the teacher-only
#    detector?
#
# ---
# ← [03 · Training](03_training.ipynb) ·
# [05 · Visual analysis: where the map lights up](05_visual_analysis.ipynb) →

# %% [markdown]
# ### Papers
#
# - **RD4AD**: Deng & Li, *Anomaly Detection via Reverse Distillation from One-Class Embedding*, CVPR 2022, [arXiv:2201.10703](https://arxiv.org/abs/2201.10703).
# - **Coordinate attention**: Hou, Zhou & Feng, *Coordinate Attention for Efficient Mobile Network Design*, CVPR 2021, [arXiv:2103.02907](https://arxiv.org/abs/2103.02907).
# - **MemAE**: Gong et al., *Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised Anomaly Detection*, ICCV 2019, [arXiv:1904.02639](https://arxiv.org/abs/1904.02639).
# - **MVTec AD**: Bergmann, Fauser, Sattlegger & Steger, *MVTec AD — A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection*, CVPR 2019 ([the data set's page](https://www.mvtec.com/company/research/datasets/mvtec-ad); journal version: IJCV 129:1038–1059, 2021, [doi:10.1007/s11263-020-01400-4](https://doi.org/10.1007/s11263-020-01400-4)).
# - **DHKD**: Tong, Li & Song, *Two-stage reverse knowledge distillation incorporated and Self-Supervised Masking strategy for industrial anomaly detection*, Knowledge-Based Systems 273:110611, 2023; and *Enhanced multi-scale features mutual mapping fusion based on reverse knowledge distillation for industrial anomaly detection and localization*, IEEE Transactions on Big Data 10(4):498–513, 2024.
