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
# # 03 · Training: two stages, live loss, checkpoints
#
# The student (notebook 02) learns on **normal images only** to reproduce the frozen teacher's
# features. The loss is the cosine distance summed over the three scales and averaged over the
# batch; RD4AD's official code flattens each scale of an image into one vector:
#
# $$\mathcal{L} = \sum_{s=1}^{3} \frac{1}{B}\sum_{b=1}^{B} \Big(1 - \cos\big(\operatorname{vec} F_s(x_b),\ \operatorname{vec} S_s(x_b)\big)\Big)$$
#
# (RD4AD's paper text describes a cosine per pixel averaged over positions instead:
# `--set train.loss=pixel`).
#
# **Two stages.**
#
# > **The papers' words.** The KBS 2023 paper: *"Two-stage reverse knowledge distillation incorporated and
# Self-Supervised Masking strategy for industrial anomaly detection"*.
#
# > **The kit's interpretation.** Stage 1 is plain reverse distillation on clean images. Stage 2, the last
# `masking.stage2_fraction` of the epochs, shows the bottleneck the teacher's features of a
# *corrupted* image $\tilde x$ (Perlin-noise or rectangular regions filled with another
# normal image's content or with noise) and asks for the clean image's features, with the
# same loss: a stage-2 step minimises
#
# $$\mathcal{L}_2 = \sum_{s=1}^{3} \frac{1}{B}\sum_{b=1}^{B} \Big(1 - \cos\big(\operatorname{vec} F_s(x_b),\
# \operatorname{vec} S_s\big(T(\tilde x_b)\big)\big)\Big), \qquad \tilde x_b = (1 - m_b) \odot x_b + m_b \odot d_b,$$
#
# with $m_b$ the corruption mask and $d_b$ the fill (another training image, or noise). No
# external data is needed. The student thus learns to *undo* anomalies rather than copy them.
#
# Settings (RD4AD's): Adam over the student only, lr 0.005, betas (0.5, 0.999), batch 16,
# seed 111, a constant learning rate. The `offline` profile, tuned for a short CPU budget,
# takes batches of 8 (twice the steps in about the same time) and lets the learning rate
# fall to 0 along half a cosine (`train.lr_schedule: cosine`), so that its last epochs
# settle instead of jumping around at 0.005. The training loop is `dhkd/run/train.py`.

# %% tags=["parameters"]
# Parameters: `make reproduce` (papermill) replaces this cell's values; the defaults run
# offline on a CPU in about a minute, on the toy data set with the offline teacher.
data_root = "../data/toy"     # a folder in MVTec AD's layout; a missing toy category is generated
category = "nut"              # a folder under data_root
profile = "offline"           # paper | rd | offline | smoke | path/to/profile.yaml
epochs = 3                    # None: the profile's own epoch count
device = "auto"               # auto | cpu | cuda | cuda:N
out_dir = "../runs/tutorial"  # run folders go to out_dir/<category>
solutions = False             # True: also run the exercises' solution cells

# %%
# %matplotlib inline
import json
from pathlib import Path

import pandas as pd
import torch
import yaml
from IPython.display import display

from dhkd.notebook import plots
from dhkd.config import to_dict
from dhkd.data import count_images, load_split, normalize
from dhkd.method.masking import corrupt
from dhkd.run.build import masking_arguments
from dhkd.data.toy import ensure_category
from dhkd.config import training_config
from dhkd.run.train import stage_of, train

ensure_category(data_root, category)
config = training_config(profile, epochs, data_root)
tree = to_dict(config)
print(yaml.safe_dump({key: tree[key] for key in ("model", "masking", "train")}, sort_keys=False))

# %% [markdown]
# ## The schedule

# %%
stages = [stage_of(epoch, config) for epoch in range(config.train.epochs)]


def span(numbers):
    return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0]) if numbers else "none"


print(f"{config.train.epochs} epochs: stage 1 (clean inputs) epochs {span([e + 1 for e, s in enumerate(stages) if s == 1])}, "
      f"stage 2 (masked inputs) epochs {span([e + 1 for e, s in enumerate(stages) if s == 2])}")
if not config.masking.enabled:
    print("masking is switched off in this profile: one stage only (RD4AD)")
share = config.data.calibration_share  # held back from training, for dhkd predict's threshold (notebook 05)
train_images = count_images(data_root, category, "train", share)  # MVTec layout or a data-set file alike
held_back = count_images(data_root, category, "calibration", share) if share else 0
print(f"{train_images} training images; {held_back} more held back as calibration images (data.calibration_share={share})")
plots.schedule(config, batches_per_epoch=-(-train_images // config.train.batch_size))

# %% [markdown]
# What stage 2 feeds the bottleneck: the corruption of a few training images with the
# profile's masking settings (`masking.shape`, `masking.fill`, `masking.ratio`), drawn by
# `dhkd.method.masking.corrupt`, the function the training loop calls.

# %%
train_split = load_split(data_root, category, "train", config.data.fit(), progress=False, calibration_share=share)
clean = train_split.images[:4]
generator = torch.Generator().manual_seed(config.train.seed)
corrupted, masks = corrupt(normalize(clean), generator, **masking_arguments(config.masking))
plots.corruption_examples(clean, corrupted, masks)

# %% [markdown]
# ## One stage-2 step, written by hand
#
# The formula above in a few lines, on the first batch of the training images, against the
# loss `Trainer.train_step` returns for the same batch and the same random draws (the step's
# generator state is saved and restored, so both draw the same donors and masks). The
# trainer trains in a temporary folder: the run below is not touched.

# %%
import tempfile

from torch.nn import functional as F

from dhkd.method.masking import donor_indices
from dhkd.run.train import Trainer

trainer = Trainer(config, data_root, category, tempfile.mkdtemp(prefix="dhkd-03-"), device=device, progress=False)
trainer.prepare()
trainer.start()
trainer.student.train()                          # as in training: BatchNorm on the batch's statistics
indices = torch.arange(min(config.train.batch_size, len(trainer.images)), device=trainer.device)
state = trainer.generator.get_state()
with torch.no_grad():
    x = normalize(trainer.images[indices])
    targets = trainer.teacher_features(x)                                            # F_s(x): the clean targets
    donors = None if config.masking.fill == "noise" else \
        normalize(trainer.images[donor_indices(indices, len(trainer.images), trainer.generator)])
    x_tilde, m = corrupt(x, trainer.generator, donors, **masking_arguments(config.masking))
    outputs = trainer.student(trainer.teacher_features(x_tilde))                     # S_s(T(x~))
    if config.train.loss == "flatten":
        by_hand = sum((1 - F.cosine_similarity(f.flatten(1), o.flatten(1), dim=1)).mean() for f, o in zip(targets, outputs))
    else:  # the paper's text: a cosine per position, averaged over positions
        by_hand = sum((1 - F.cosine_similarity(f, o, dim=1)).mean() for f, o in zip(targets, outputs))
trainer.generator.set_state(state)
packaged = trainer.train_step(indices, stage=2)
assert torch.isclose(by_hand.float(), packaged.float(), rtol=1e-5, atol=1e-5), (float(by_hand), float(packaged))
print(f"stage-2 loss by hand {float(by_hand):.5f} = Trainer.train_step {float(packaged):.5f} "
      f"({len(indices)} images, {100 * float(m.float().mean()):.1f} % of their pixels corrupted)")

# The corruption itself, x~ = (1 - m) x + m d: outside the masks the image is untouched; with
# the image fill, d is the donor image at the same place (the noise fill draws d as noise).
assert torch.equal(x_tilde[~m.unsqueeze(1).expand_as(x)], x[~m.unsqueeze(1).expand_as(x)])
if donors is not None:
    image_fill = {**masking_arguments(config.masking), "fill": "image"}
    x_image, m_image = corrupt(x, torch.Generator(device=x.device).manual_seed(0), donors, **image_fill)
    m_image = m_image.unsqueeze(1).to(x.dtype)
    assert torch.equal(x_image, (1 - m_image) * x + m_image * donors)
    print("x~ = (1 - m) x + m d by hand = dhkd.method.masking.corrupt (image fill, d the donors; "
          "outside the masks every fill leaves x as it is)")

# %% [markdown]
# ## Train
#
# The figure below is redrawn after every epoch from the run's `history.csv` (loss per epoch,
# coloured by stage, and throughput). The kernel's interrupt button (or Ctrl-C on the command
# line) stops training at the next batch and saves a checkpoint of that exact position;
# running this cell again resumes from it.

# %%
run_dir = Path(out_dir) / category
with plots.live_loss(run_dir, config.train.epochs):
    # resume="auto": continue a run of this configuration found there; one of another
    # configuration is moved aside (run_dir/.replaced-<time>/), under the run's lock
    train(config, data_root, category, run_dir, device=device, resume="auto", progress=False)
history = pd.read_csv(run_dir / "history.csv")
print(f"{len(history)} epochs, {history['seconds'].sum():.0f} s of training; loss {history['loss'].iloc[0]:.4f} "
      f"after the first epoch, {history['loss'].iloc[-1]:.4f} after the last")

# %% [markdown]
# ## Checkpoints and the run folder
#
# Everything about a run lives in its folder:
#
# | file | what |
# | --- | --- |
# | `config.yaml` | the resolved configuration: exactly what ran |
# | `checkpoint.pt` | student and optimiser state, RNG state, position (written atomically after every epoch and on interruption) |
# | `history.csv` | per epoch: stage, loss, seconds, images per second |
# | `run.json` | status (training, interrupted, done), epochs done, device, data root |
# | `start.pt` | the student as the first optimiser step found it (after the fusion's scale matching and the memory's k-means): notebook 06's baseline |
#
# The command-line equivalent of this notebook, and how to continue an interrupted run:
#
# ```
# dhkd train --data-root DATA --category CAT --profile PROFILE --epochs N --out RUN
# dhkd train ... --out RUN --resume        # same command plus --resume
# ```
#
# A resumed run draws the same batches and corruptions as an uninterrupted one (on the CPU it
# ends with the same numbers).

# %%
for path in sorted(run_dir.iterdir()):
    print(f"{path.name:18s} {path.stat().st_size / 1e6:8.2f} MB")
info = json.loads((run_dir / "run.json").read_text())
info["data_root"] = data_root  # as given, not this machine's absolute path
print(yaml.safe_dump(info, sort_keys=False))

# %%
display(history.round(4).tail(10))

# %% [markdown]
# ## What to take from this
#
# - The student learns from normal images only; the loss is the same cosine distance the
#   anomaly map uses, flattened per image and scale.
# - Stage 2 is the same loss with a corrupted input and the clean targets, $\mathcal{L}\big(T(x),
#   S(T(\tilde x))\big)$: the student learns to rebuild *clean* features from *masked*
#   inputs, so that at test time it rebuilds the normal version of a defective image. In the
#   kit's three-seed ablation on MTD this stage carries the measured gain over RD (notebook 06).
# - A falling loss says the student rebuilds normal features better; it does not say that
#   defects are found. Only the evaluation (notebook 04) says that.
# - Everything about a run, including where to resume and the weights it started from
#   (`start.pt`), lives in its folder.
#
# ## Questionnaire
#
# 1. *What is the target of a stage-2 step?* The teacher's features of the **clean** image; the
#    student sees the teacher's features of the corrupted one.
# 2. *Why does the loss jump when stage 2 begins?* The inputs become harder: part of each image
#    must be rebuilt from what normal images look like, not copied.
# 3. *What does `--resume` restore?* Student, optimiser, position in the epoch and the random
#    generators, so the same batches and corruptions follow.
# 4. *Why does a different configuration need another `out_dir`?* A run folder holds one
#    configuration; training another one into it moves the earlier run aside first (into
#    `.replaced-<time>/` inside the folder, never deleted), so the folder holds only the new one.
#
# ## Try this
#
# Each exercise has a solution cell below (collapsed; it runs when `solutions = True`). They
# train into folders of their own next to `out_dir`, never into the tutorial run.
#
# 1. **Switch the masking stage off.** Train the same configuration with
#    `config.masking.enabled = False` (`dhkd train ... --set masking.enabled=false`) into
#    another folder and evaluate both. *What you should see:* one stage only, a loss curve
#    without the jump; on the toy set and a few epochs the metrics differ by noise-sized
#    amounts (the ablation needs several seeds to tell them apart, notebook 06).
# 2. **Interrupt and resume.** Stop a training after its first epoch, look at `run.json`, then
#    resume. *What you should see:* status `interrupted`, then `done` with every epoch in
#    `history.csv` and the same final loss as an uninterrupted run.
# 3. **More of stage 2.** Set `config.masking.stage2_fraction = 0.5`. *What you should see:* the
#    schedule's stage-2 share doubles and the loss jumps where the inputs become masked.

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 1: the same configuration without the masking stage, in a folder of its own.
if solutions:
    import copy

    from dhkd.run.evaluate import evaluate_run

    no_masking = copy.deepcopy(config)
    no_masking.masking.enabled = False
    other = Path(out_dir).parent / "exercise_03_no_masking" / category
    train(no_masking, data_root, category, other, device=device, resume="auto", progress=False)
    compared = {name: evaluate_run(folder, data_root, device, progress=False, diagnostics=False)
                for name, folder in (("with masking", run_dir), ("without masking", other))}
    display(pd.DataFrame(compared).loc[["image_auroc", "pixel_auroc", "aupro"]].astype(float).mul(100).round(1))
    display(plots.loss_curves(other / "history.csv", no_masking.train.epochs))

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 2: a stop after the first epoch (a SIGINT, as the interrupt button sends), then --resume.
if solutions:
    import os
    import signal

    from dhkd.run.folder import move_aside
    from dhkd.run.train import TrainingInterrupted

    stopped = Path(out_dir).parent / "exercise_03_interrupted" / category
    move_aside(stopped)  # start over each time the solution runs; the kit moves a run aside, never deletes it
    try:
        Trainer(config, data_root, category, stopped, device=device, progress=False).fit(
            after_epoch=lambda history: os.kill(os.getpid(), signal.SIGINT) if len(history) == 1 else None)
    except TrainingInterrupted as stop:
        print(f"stopped: {stop}")
    print("run.json status:", json.loads((stopped / "run.json").read_text())["status"])
    train(config, data_root, category, stopped, device=device, resume=True, progress=False)
    resumed = pd.read_csv(stopped / "history.csv")
    print(f"after --resume: status {json.loads((stopped / 'run.json').read_text())['status']}, {len(resumed)} epochs; "
          f"final loss {resumed['loss'].iloc[-1]:.6f}, the uninterrupted run's {history['loss'].iloc[-1]:.6f}")

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 3: half the epochs in stage 2: the schedule, then a training of it in a folder of its own.
if solutions:
    import copy

    half = copy.deepcopy(config)
    half.masking.stage2_fraction = 0.5
    display(plots.schedule(half, batches_per_epoch=-(-train_images // half.train.batch_size)))
    folder = Path(out_dir).parent / "exercise_03_half_stage2" / category
    train(half, data_root, category, folder, device=device, resume="auto", progress=False)
    display(plots.loss_curves(folder / "history.csv", half.train.epochs))

# %% [markdown]
# ---
# ← [02 · The architecture](02_architecture.ipynb) ·
# [04 · Evaluation: anomaly maps and what the metrics mean](04_evaluation.ipynb) →

# %% [markdown]
# ### Papers
#
# - **RD4AD**: Deng & Li, *Anomaly Detection via Reverse Distillation from One-Class Embedding*, CVPR 2022, [arXiv:2201.10703](https://arxiv.org/abs/2201.10703).
# - **Coordinate attention**: Hou, Zhou & Feng, *Coordinate Attention for Efficient Mobile Network Design*, CVPR 2021, [arXiv:2103.02907](https://arxiv.org/abs/2103.02907).
# - **MemAE**: Gong et al., *Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised Anomaly Detection*, ICCV 2019, [arXiv:1904.02639](https://arxiv.org/abs/1904.02639).
# - **MVTec AD**: Bergmann, Fauser, Sattlegger & Steger, *MVTec AD — A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection*, CVPR 2019 ([the data set's page](https://www.mvtec.com/company/research/datasets/mvtec-ad); journal version: IJCV 129:1038–1059, 2021, [doi:10.1007/s11263-020-01400-4](https://doi.org/10.1007/s11263-020-01400-4)).
# - **DHKD**: Tong, Li & Song, *Two-stage reverse knowledge distillation incorporated and Self-Supervised Masking strategy for industrial anomaly detection*, Knowledge-Based Systems 273:110611, 2023; and *Enhanced multi-scale features mutual mapping fusion based on reverse knowledge distillation for industrial anomaly detection and localization*, IEEE Transactions on Big Data 10(4):498–513, 2024.
