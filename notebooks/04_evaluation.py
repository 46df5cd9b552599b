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
# as labels. Most pixels are normal, so it mostly asks whether the normal pixels of every
# image score low; it is not bound to image AUROC in either direction (this run prints both).
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
device = "auto"               # auto | cpu | cuda | cuda:N
out_dir = "../runs/tutorial"  # run folders go to out_dir/<category>
solutions = False             # True: also run the exercises' solution cells

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
from dhkd.run.evaluate import evaluate_run, load_model, load_predictions, teacher_only_maps
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
# ## One defective image, written from scratch
#
# Before the one-call evaluation, the map of a single defective image (the one with the
# largest defect), written out in a few lines of torch and numpy, each step checked against
# the package function `evaluate_run` calls:
#
# 1. teacher and student features of the image: `model(x)`;
# 2. per scale, $1 - \cos$ at every position (`scale_maps` does this and step 3);
# 3. bilinear upsampling to the image size with the corners aligned (as RD4AD): output pixel
#    $i$ reads the source at $i\,(h-1)/(S-1)$ and mixes its two neighbours;
# 4. the sum over the scales;
# 5. the Gaussian blur, $\sigma = 4$, truncated at $4\sigma$, the border mirrored
#    (`d c b a | a b c d`, scipy's `reflect`): `gaussian_blur`. Its maximum is the image score.
#
# The last panel is notebook 01's detector for the same image, which had no student: the
# distance to the mean of the normal training features, through the same steps
# (`dhkd.run.evaluate.teacher_only_maps`).

# %%
import numpy as np


def upsample(m: torch.Tensor, out: int) -> torch.Tensor:
    """(h, w) -> (out, out), bilinear, corners aligned: output i reads the source at i (h - 1) / (out - 1)."""
    def rows(m):  # dimension 0 to `out` points
        pos = torch.linspace(0, m.shape[0] - 1, out, dtype=m.dtype)
        lo = pos.floor().long().clamp(max=m.shape[0] - 2)
        t = (pos - lo)[:, None]
        return m[lo] * (1 - t) + m[lo + 1] * t
    return rows(rows(m).T).T


def blur(m: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, truncated at 4 sigma, mirrored border."""
    radius = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(m, radius, mode="symmetric")
    rows = np.stack([np.convolve(r, k, mode="valid") for r in padded])          # along the width
    return np.stack([np.convolve(c, k, mode="valid") for c in rows.T]).T        # along the height


defect_sizes = test.masks.flatten(1).sum(1)
index = int(torch.argmax(defect_sizes))
x = normalize(test.images[index:index + 1].to(dev))
with torch.inference_mode():
    teacher_features, student_features = model(x)                                           # step 1
per_scale = []
for f_t, f_s in zip(teacher_features, student_features):
    f_t, f_s = f_t[0].double().cpu(), f_s[0].double().cpu()                                  # (C, h, w)
    cos = (f_t * f_s).sum(0) / (f_t.norm(dim=0) * f_s.norm(dim=0))                           # step 2
    per_scale.append(upsample(1 - cos, size))                                                # step 3
per_scale = torch.stack(per_scale)                                                           # (3, S, S)
summed = per_scale.sum(0)                                                                    # step 4
blurred = torch.from_numpy(blur(summed.numpy(), sigma))                                      # step 5

packaged_scales = scale_maps(teacher_features, student_features, size)[0].cpu()
assert torch.allclose(per_scale.float(), packaged_scales, atol=1e-5), "1 - cos and upsampling"
assert torch.allclose(blurred.float(), gaussian_blur(packaged_scales.sum(0)[None], sigma)[0], atol=1e-5), "blur"
assert torch.allclose(blurred.float(), anomaly_map(teacher_features, student_features, size, sigma)[0].cpu(), atol=1e-5)
print("by hand = dhkd.method.anomaly_map: per-scale 1 - cos, upsampling, sum and blur agree to 1e-5")

train = load_split(data_root, category, "train", size, progress=False)
normal = train.images[:32]  # notebook 01's reference for "normal"
teacher_only = teacher_only_maps(model.teacher, normal, test.images[index:index + 1], size, sigma)
for s in range(3):
    print(f"scale {s + 1}: features {tuple(teacher_features[s].shape[1:])}, largest 1 − cos {per_scale[s].max():.3f}")
print(f"image score (maximum of the blurred map): {float(blurred.max()):.4f}; "
      f"teacher-only score {image_scores(teacher_only).item():.4f}")
plots.map_steps(test.images[index], test.masks[index], per_scale.float(), summed.float(), blurred.float(), teacher_only[0])

# %% [markdown]
# Compare the scales: the fine ones resolve small structures (edges, thin scratches), the
# coarse one sees wider regions. The sum keeps what the scales agree on, and the blur removes
# single-position noise, which is why the image score is taken from the blurred map. After a
# short training the student still misses much of the *normal* object too, and the whole part
# glows; with more epochs the glow shrinks towards the defect (exercise 4). Scores mean
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
teacher_maps = teacher_only_maps(model.teacher, normal, test.images, size, sigma)
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
# ## The metrics from scratch
#
# **Image AUROC by counting pairs.** Over every pair of one defective and one good test image,
# the share in which the defective one scores higher (a tie counts half): the definition above,
# in three lines, against `dhkd.metrics.image_auroc`.

# %%
scores, labels = predictions.scores.double(), predictions.labels
positive, negative = scores[labels == 1], scores[labels == 0]
wins = (positive[:, None] > negative[None, :]).double() + 0.5 * (positive[:, None] == negative[None, :]).double()
auroc_by_hand = float(wins.mean())
assert abs(auroc_by_hand - metrics.image_auroc(predictions.scores, predictions.labels)) < 1e-9
print(f"{len(positive)} × {len(negative)} pairs, defective above good in {float(wins.sum()):.1f}: "
      f"image AUROC {100 * auroc_by_hand:.2f} % = dhkd.metrics.image_auroc")

# %% [markdown]
# **One point of the PRO curve.** Take the threshold $t$ at which 10 % of the normal pixels are
# flagged. Label the connected defect regions of every mask (8-connectivity, as MVTec AD's
# evaluation), then $\text{PRO}(t)$ is the mean over regions of the share of each region's pixels
# at or above $t$, and $\text{FPR}(t)$ the share of normal pixels at or above $t$. The package's
# `pro_curve` has one point per distinct score; its point at $t$ must be the same.

# %%
from scipy import ndimage

maps, masks = predictions.maps.double().numpy(), predictions.masks.numpy()
t = float(np.quantile(maps[~masks], 0.9, method="higher"))  # a score that occurs in the maps
above = maps >= t
fpr_by_hand = float(above[~masks].mean())
regions = []
for image_above, mask in zip(above, masks):
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
    regions += [float(image_above[labelled == r].mean()) for r in range(1, count + 1)]
pro_by_hand = float(np.mean(regions))
fprs, pros = metrics.pro_curve(predictions.maps, predictions.masks)
point = int((np.unique(maps) >= t).sum())  # the curve's points run over the distinct scores, highest first
assert abs(fprs[point] - fpr_by_hand) < 1e-9 and abs(pros[point] - pro_by_hand) < 1e-9
print(f"threshold {t:.4f}: FPR {fpr_by_hand:.4f}, PRO {pro_by_hand:.4f} over {len(regions)} defect regions "
      f"= point {point} of dhkd.metrics.pro_curve")

# %% [markdown]
# **Pixel AUROC by ranks.** Over millions of pixels the pairs cannot be counted, but the same
# probability follows from the ranks of all pixel scores (Mann-Whitney: ties share their mean
# rank): $\text{AUROC} = \big(\sum_{p \in C} \text{rank}_p - |C|(|C| + 1)/2\big) / (|C|\,|\bar C|)$.
#
# **AUPRO from its curve.** $\frac{1}{0.3}\int_0^{0.3} \text{PRO}\,d\,\text{FPR}$ with trapezoids
# over the curve checked above, the last one cut at FPR 0.3.
#
# **RD4AD's PRO, as its released code.** Per defective image: 200 thresholds
# `np.arange(min, max, (max - min) / 200)` of that image's map, PRO (mean over its 8-connected
# regions of the share above the threshold) and FPR at each, the points with FPR < 0.3 kept,
# their FPR divided by the largest kept one, sklearn's `auc`; then the mean over images.

# %%
from scipy.stats import rankdata
from sklearn.metrics import auc

ranks = rankdata(maps.reshape(-1))
n_defect, n_normal = int(masks.sum()), int((~masks).sum())
pixel_auroc_by_hand = float((ranks[masks.reshape(-1)].sum() - n_defect * (n_defect + 1) / 2) / (n_defect * n_normal))
assert abs(pixel_auroc_by_hand - metrics.pixel_auroc(predictions.maps, predictions.masks)) < 1e-6

limit = config.eval.fpr_limit
inside = fprs <= limit
x_cut, y_cut = np.append(fprs[inside], limit), np.append(pros[inside], np.interp(limit, fprs, pros))
aupro_by_hand = float(np.sum(0.5 * (y_cut[1:] + y_cut[:-1]) * np.diff(x_cut)) / limit)
assert abs(aupro_by_hand - metrics.aupro(predictions.maps, predictions.masks, fpr_limit=limit)) < 1e-6


def rd4ad_compute_pro(mask: np.ndarray, amap: np.ndarray, num_th: int) -> float:
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
    points = []
    for th in np.arange(amap.min(), amap.max(), (amap.max() - amap.min()) / num_th):
        binary = amap > th
        pro = np.mean([binary[labelled == r].mean() for r in range(1, count + 1)])
        points.append((binary[mask == 0].mean(), pro))
    kept = np.array([p for p in points if p[0] < 0.3])
    return float(auc(kept[:, 0] / kept[:, 0].max(), kept[:, 1]))


defective_images = [i for i in range(len(masks)) if masks[i].any()]
pro_by_rd4ad = float(np.mean([rd4ad_compute_pro(masks[i], maps[i], config.eval.pro_thresholds) for i in defective_images]))
assert abs(pro_by_rd4ad - metrics.pro_rd4ad(predictions.maps, predictions.masks, config.eval.pro_thresholds)) < 1e-6
print(f"pixel AUROC by ranks {100 * pixel_auroc_by_hand:.3f} %, AUPRO by trapezoids {100 * aupro_by_hand:.3f} %, "
      f"RD4AD's PRO by its own loop {100 * pro_by_rd4ad:.3f} % (over {len(defective_images)} defective images): "
      f"each = dhkd.metrics within 1e-6")

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
#   maps, upsampled, summed and blurred, a dozen lines by hand. The image score is its maximum.
# - Image AUROC asks "are defective images scored above good ones?" (count the pairs), pixel
#   AUROC "are defect pixels above normal ones?", AUPRO "is every defect region found, small
#   ones too, before many normal pixels light up?" (one point: a threshold, the regions'
#   mean coverage, the normal pixels flagged).
# - The kit reports MVTec AD's AUPRO and RD4AD's PRO under their own names because papers
#   copy one or the other; compare like with like.
# - A trained student should beat the teacher-only detector; where it does not, the training
#   was too short or the category suits plain feature distances.
#
# ## Questionnaire
#
# 1. *Why is the image score taken from the blurred map?* The maximum of an unblurred map is
#    set by single noisy positions, on good images too; the blur averages them away.
# 2. *What does an image AUROC of 0.5 mean?* A defective image scores above a good one as
#    often as below: the scores do not separate them.
# 3. *Why can pixel AUROC be high while AUPRO is low?* Pixel AUROC pools pixels, so large
#    defects dominate; AUPRO weights every region the same, so missed small defects cost it.
# 4. *Which pixels decide the FPR of a PRO point?* The normal ones only (outside every mask).
#
# ## Try this
#
# Each exercise has a solution cell below (collapsed; it runs when the parameter
# `solutions = True`, and writes nothing into the run folder).
#
# 1. **No blur.** Score the whole split with `sigma = 0` (the maps `scale_maps(...).sum(1)`).
#    *What you should see:* the maps turn speckled in normal regions, the image scores of good
#    images grow too, and image AUROC and AUPRO drop more than pixel AUROC.
# 2. **One scale only.** Score the split with each scale's map alone, blurred as usual.
#    *What you should see:* no single scale matches the sum on every metric; the coarse scale
#    finds large defects with blurry outlines, the fine scale sharp edges and more noise.
# 3. **Count the pairs yourself.** Flip the labels (`1 - labels`) in the pair-counting cell.
#    *What you should see:* AUROC becomes exactly 1 minus the old value.
# 4. **Train longer.** Train the same configuration for twice the epochs into another folder
#    and evaluate it. *What you should see:* image AUROC and AUPRO move away from the
#    teacher-only detector (on the toy set, a few epochs already do).

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solutions 1 and 2: every test image's per-scale maps once, then the metrics per variant.
if solutions:
    with torch.inference_mode():
        parts = []
        for start in range(0, len(test), 8):
            t_f, s_f = model(normalize(test.images[start:start + 8].to(dev)))
            parts.append(scale_maps(t_f, s_f, size).cpu())
    scales_all = torch.cat(parts)  # (N, 3, S, S)
    variants = {f"sum, blur σ={sigma}": gaussian_blur(scales_all.sum(1), sigma), "sum, no blur": scales_all.sum(1),
                **{f"scale {s + 1} only": gaussian_blur(scales_all[:, s], sigma) for s in range(3)}}
    display(pd.DataFrame({name: {"image AUROC": 100 * metrics.image_auroc(image_scores(m), test.labels),
                                 "pixel AUROC": 100 * metrics.pixel_auroc(m, test.masks),
                                 "AUPRO": 100 * metrics.aupro(m, test.masks)} for name, m in variants.items()}).T.round(1))

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 3: flipped labels give 1 - AUROC.
if solutions:
    flipped = 1 - labels
    wins_flipped = (scores[flipped == 1][:, None] > scores[flipped == 0][None, :]).double() \
        + 0.5 * (scores[flipped == 1][:, None] == scores[flipped == 0][None, :]).double()
    print(f"AUROC {auroc_by_hand:.4f}, with flipped labels {float(wins_flipped.mean()):.4f}, "
          f"sum {auroc_by_hand + float(wins_flipped.mean()):.4f}")

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 4: twice the epochs, in a folder of its own (the tutorial run is left as it is).
if solutions:
    from dhkd.config import training_config
    from dhkd.run.train import train

    longer = Path(out_dir).parent / "exercise_04_longer" / category
    # resume="auto": an interrupted run there is finished first, a finished one is left as it is
    train(training_config(profile, 2 * config.train.epochs, data_root), data_root, category, longer, device=device,
          resume="auto", progress=False)
    again = evaluate_run(longer, data_root, device, progress=False, diagnostics=False)
    display(pd.DataFrame({f"{config.train.epochs} epochs": result, f"{2 * config.train.epochs} epochs": again}
                         ).loc[["image_auroc", "pixel_auroc", "aupro"]].astype(float).mul(100).round(1))

# %% [markdown]
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
