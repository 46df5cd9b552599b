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
# # 02 · The architecture: reverse distillation and DHKD's student
#
# Notebook 01 showed that a frozen ImageNet encoder, the **teacher**, already separates many
# defects from normal texture, but that comparing its features with an *average* normal image
# is blunt. Reverse distillation (RD4AD) learns instead, for every image, what its normal
# features should have been, and measures how far the real ones are from that.
#
# **Why "reverse".** Earlier distillation detectors train a *student encoder* to imitate the
# teacher on normal images, hoping it fails to imitate on anomalies. But student and teacher
# then see the same image through similar networks, and the student often imitates the
# anomaly too. RD4AD turns the student around:
#
# 1. the student never sees the image. Its input is the teacher's own features, squeezed by a
#    **one-class bottleneck embedding (OCBE)** into a small map $z$ with far fewer numbers than
#    the features it must rebuild. Trained on normal images only, the bottleneck learns to keep
#    what *normal* images need, and an anomaly's unusual features have no room to pass;
# 2. the student is a **decoder that mirrors the teacher** (the teacher's ResNet stages run
#    backwards, upsampling where the teacher downsamples), so from $z$ it rebuilds the
#    teacher's features at all three scales, $S_s \approx F_s$, coarse to fine;
# 3. the **loss** is the cosine distance between $F_s$ and $S_s$, scale by scale. At test
#    time the same distance, position by position, is the anomaly map (notebook 04): where
#    the student could only rebuild something normal, teacher and student disagree.
#
# DHKD keeps this structure and adds three modules (mutual-mapping fusion before the
# bottleneck, coordinate attention on the bottleneck's input, a memory bank on
# $z$) plus a second training stage on masked images (notebook 03).
#
# This notebook builds the model of the chosen profile **as training starts it** and runs one
# batch through it, module by module. That start is not only random weights: before its
# first update, training rescales the fusion's mappings to the scale each one feeds (with
# BatchNorm on the batch's statistics, as a training step computes them) and puts
# the memory items at k-means centres of the training embeddings (`Trainer.start`; a run keeps
# the result as `start.pt`, notebook 06 compares against it). Nothing here needs a trained
# run. The code is `dhkd/method/` (one module per file); every formula below is also written
# by hand and checked against it.

# %% tags=["parameters"]
# Parameters: `make reproduce` (papermill) replaces this cell's values; the defaults run
# offline on a CPU in about a minute, on the toy data set with the offline teacher.
data_root = "../data/toy"     # a folder in MVTec AD's layout; a missing toy category is generated
category = "nut"              # a folder under data_root
profile = "offline"           # paper | rd | offline | smoke | path/to/profile.yaml
epochs = 3                    # None: the profile's own epoch count
device = "auto"               # auto | cpu | cuda | cuda:N
solutions = False             # True: also run the exercises' solution cells

# %%
# %matplotlib inline
import copy
import tempfile

import pandas as pd
import torch
from IPython.display import display
from torch.nn import functional as F

from dhkd.notebook import plots
from dhkd.data import load_split, normalize
from dhkd.method.loss import distillation_loss
from dhkd.method import CoordinateAttention
from dhkd.run import diagnostics
from dhkd.run.build import build_model
from dhkd.data.toy import ensure_category
from dhkd.config import training_config
from dhkd.run.device import resolve_device
from dhkd.run.train import Trainer

ensure_category(data_root, category)
dev = resolve_device(device)
config = training_config(profile, epochs, data_root)
# The model as training's first step finds it: built (seeded), then the data-driven starts.
# The trainer writes nothing: its folder is a fresh temporary one.
trainer = Trainer(config, data_root, category, tempfile.mkdtemp(prefix="dhkd-02-"), device=device, progress=False)
trainer.prepare()
model = trainer.start().eval()
start_state = copy.deepcopy(model.student.state_dict())
teacher, student = model.teacher, model.student
switches = {name: getattr(config.model, name).enabled for name in ("fusion", "attention", "memory")}
print(f"profile {config.profile}: teacher {teacher.name}, images {config.data.image_size} px, additions {switches}")

# %% [markdown]
# One batch: four normal training images. Everything below runs on it.

# %%
train = load_split(data_root, category, "train", config.data.fit(), progress=False)
x = normalize(train.images[:4].to(dev))
print(f"batch x: {tuple(x.shape)} (images, RGB, height, width), ImageNet-normalised")

# %% [markdown]
# ## The forward pass, one module at a time
#
# The next cell is the whole student, written out step by step with the package's modules
# (it is `Student.forward` in `dhkd/method/model.py`, unrolled). Brackets in the comments
# mark DHKD's additions; with all of them off this is RD4AD.

# %%
with torch.inference_mode():
    F_teacher = teacher(x)                                           # F1, F2, F3: the frozen teacher
    G = student.fusion(F_teacher) if student.fusion else F_teacher   # [mutual-mapping fusion]
    bottleneck = student.bottleneck
    joined = torch.cat([bottleneck.down1(G[0]), bottleneck.down2(G[1]), G[2]], dim=1)  # OCBE: one scale
    attended = bottleneck.attention(joined)                          # [coordinate attention]
    z = bottleneck.embed(attended)                                   # OCBE: residual blocks -> embedding z
    z_read = student.memory(z) if student.memory else z              # [memory bank read-out]
    S_student = student.decoder(z_read)                              # S3 -> S2 -> S1, mirrored ResNet
    _, S_packaged = model(x)                                         # the same, in one call

assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(S_student, S_packaged))
steps = [("image x", x), *[(f"teacher F{s}", f) for s, f in enumerate(F_teacher, start=1)]]
if student.fusion:
    steps += [(f"fused G{s}", g) for s, g in enumerate(G, start=1)]
steps += [("OCBE: three scales joined", joined), ("OCBE: embedding z", z)]
if student.memory:
    steps.append(("memory read-out (decoder input)", z_read))
steps += [(f"student S{s}", f) for s, f in enumerate(S_student, start=1)]
shapes = pd.DataFrame([(name, "×".join(map(str, t.shape[1:])), t.shape[1:].numel()) for name, t in steps],
                      columns=["step", "shape (C×H×W)", "numbers per image"]).set_index("step")
display(shapes)

# %% [markdown]
# The same shapes as a picture (RD4AD's U: teacher on top, bottleneck on the right, student
# below, the loss between matching scales):

# %%
def size(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[1:])


diagram_shapes = {"image": size(x), "z": size(z), **{f"F{s}": size(f) for s, f in enumerate(F_teacher, start=1)},
                  **{f"S{s}": size(f) for s, f in enumerate(S_student, start=1)}}
plots.architecture_diagram(diagram_shapes, **switches)

# %% [markdown]
# ### How narrow is the bottleneck?
#
# The student must rebuild all three teacher scales from $z$ alone:

# %%
features_size = sum(f.shape[1:].numel() for f in F_teacher)
print(f"teacher features: {features_size:,} numbers per image; embedding z: {z.shape[1:].numel():,} "
      f"({features_size / z.shape[1:].numel():.1f} times fewer)")
print(f"z is {z.shape[-2]}×{z.shape[-1]} positions: each one summarises a {x.shape[-1] // z.shape[-1]}-pixel square of the image")

# %% [markdown]
# That squeeze is the "one-class" part: nothing forces the bottleneck to keep what normal
# images never contained. The OCBE first brings the three scales to one grid (stride-2
# 3 × 3 convolutions: $F_1$ twice, $F_2$ once), concatenates them with $F_3$ (RD4AD calls this
# multi-scale feature fusion), then passes them through ResNet bottleneck blocks, the first
# with stride 2.
#
# ### Parameters, module by module
#
# Only the student is trained; the teacher's weights are frozen.

# %%
parts = {"teacher (frozen)": teacher, "fusion": student.fusion, "OCBE (with its attention)": student.bottleneck,
         "memory bank": student.memory, "decoder (with its attention)": student.decoder}
counts = {name: sum(p.numel() for p in module.parameters()) if module is not None else 0 for name, module in parts.items()}
display(pd.Series(counts, name="parameters").map("{:,}".format).to_frame())

# %% [markdown]
# ## The loss
#
# RD4AD's official code flattens each scale of an image into one vector and takes one cosine
# per image and scale, summed over the scales and averaged over the batch:
#
# $$\mathcal{L} = \sum_{s=1}^{3} \frac{1}{B}\sum_{b=1}^{B} \Big(1 - \cos\big(\operatorname{vec} F_s(x_b),\
# \operatorname{vec} S_s(x_b)\big)\Big), \qquad \cos(a, b) = \frac{a^\top b}{\lVert a\rVert\,\lVert b\rVert}.$$
#
# (RD4AD's paper text describes a cosine per position averaged over positions instead:
# `--set train.loss=pixel`.) Written out by hand, then with the package's function:

# %%
by_hand = sum((1 - F.cosine_similarity(f.flatten(1), s.flatten(1), dim=1)).mean() for f, s in zip(F_teacher, S_student))
packaged = distillation_loss(F_teacher, S_student)
assert config.train.loss != "flatten" or torch.isclose(by_hand, packaged, atol=1e-6)
print(f"loss by hand {by_hand:.4f}, dhkd.method.loss.distillation_loss {packaged:.4f} (0 = perfect, at most {2 * len(F_teacher)})")

# %% [markdown]
# The untrained student's features point almost anywhere, so each scale adds close to 1. A few
# optimiser steps on this one batch (RD4AD's Adam settings, over the student only) show the
# loss starting to fall; notebook 03 trains properly, on the whole training set.

# %%
optimizer = torch.optim.Adam(student.parameters(), lr=config.train.lr, betas=tuple(config.train.betas))
student.train()
with torch.no_grad():
    targets = teacher(x)
losses = []
for step in range(5):
    loss = distillation_loss(targets, student(targets))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print("loss before each of five Adam steps: " + " → ".join(f"{value:.3f}" for value in losses))
student.load_state_dict(start_state)  # back to the starting weights
_ = student.eval()

# %% [markdown]
# ## DHKD's three additions
#
# The DHKD papers publish no code and no layer-level details. For each module below, **the
# papers' words** are what their abstracts and titles say; **the kit's interpretation** is
# how this kit builds it. Every addition has its own switch (`--set model.fusion.enabled=false`,
# `model.attention.enabled`, `model.memory.enabled`, and `masking.enabled` for the training
# stage), so `make ablation` can measure each one.
#
# ### 1. Mutual-mapping fusion (MMF), before the bottleneck
#
# > **The papers' words.** The IEEE Trans. Big Data 2024 paper's abstract names *an enhanced
# > multi-scale feature mutual mapping fusion module* that fuses features of different levels
# > *inhomogeneously*.
#
# > **The kit's interpretation.** Each target scale $s$ borrows from the two others. Scale $t$
# > is mapped onto $s$'s shape by $M_{ts}$ (finer to coarser: one stride-2 3 × 3 conv + BN +
# > ReLU per halving; coarser to finer: bilinear upsampling and a 1 × 1 conv + BN + ReLU), and
# >
# > $$G_s = F_s + \sum_{t \neq s} w_{st}\, M_{ts}(F_t), \qquad w_s = \operatorname{softmax}(a_s),$$
# >
# > with learnable logits $a_s$ per target: "inhomogeneously" is read as *every target scale
# > learns its own mixture*. $G_1, G_2, G_3$ replace $F_1, F_2, F_3$ as the bottleneck's input;
# > the distillation targets stay the raw teacher features. The logits start at zero, so every
# > $w_{st}$ starts at 0.5: that is what "not learned" looks like in notebook 06.
#
# The table lists every borrowed term $w_{st} M_{ts}(F_t)$ and its size against the scale it
# feeds, $\lVert w_{st} M_{ts}(F_t) \rVert / \lVert F_s \rVert$, **as the first training step
# sees it**: BatchNorm normalising with the batch's own statistics
# (`dhkd.run.diagnostics.batch_statistics`). That is where the scale matching (`match_scale`)
# puts each mapping's output at the RMS of $F_s$, so each term starts at about $w_{st}$ times
# $F_s$. The last column is the same model in eval mode: `start.pt`'s BatchNorm still holds its
# initial running statistics (mean 0, variance 1), so the mappings pass the teacher's features
# unnormalised and the size depends on how large those features are; no training step
# computes that. The sum of the terms is then checked against the module: $G_s = F_s + \sum_t w_{st} M_{ts}(F_t)$.

# %%
if student.fusion is None:
    print("fusion is switched off in this profile (model.fusion.enabled=false)")
else:
    fusion = student.fusion
    weights = fusion.mixing_weights().detach().cpu()

    def borrowed_terms() -> dict[tuple[int, int], torch.Tensor]:
        """w_st M_ts(F_t) for every target s and source t, in the student's current BatchNorm mode."""
        return {(s, t): weights[s, t] * fusion.mappings[f"{t}to{s}"](F_teacher[t]).cpu()
                for s in range(3) for t in fusion.sources(s) if t != s}

    with torch.inference_mode():
        eval_terms = borrowed_terms()
        with diagnostics.batch_statistics(student):
            terms = borrowed_terms()
            G_first_step = fusion(F_teacher)
    for s in range(3):  # the formula by hand against the module
        by_hand = F_teacher[s].cpu() + sum(term for (target, _), term in terms.items() if target == s)
        assert torch.allclose(by_hand, G_first_step[s].cpu(), rtol=1e-4, atol=1e-4 * float(G_first_step[s].abs().max()))
    rows = [(f"G{s + 1} ← F{t + 1}", float(weights[s, t]), f"{tuple(F_teacher[t].shape[1:])} → {tuple(term.shape[1:])}",
             float(term.norm() / F_teacher[s].cpu().norm()), float(eval_terms[s, t].norm() / F_teacher[s].cpu().norm()))
            for (s, t), term in terms.items()]
    table = pd.DataFrame(rows, columns=["term", "w_st", "M_ts maps", "‖w M(F_t)‖ / ‖F_s‖, first step",
                                        "same, eval mode (initial statistics)"]).set_index("term")
    display(table.round(3))
    matched = table["‖w M(F_t)‖ / ‖F_s‖, first step"] / table["w_st"]
    print(f"G_s = F_s + Σ w_st M_ts(F_t) by hand = dhkd.method.MutualMappingFusion on every scale; as the first step "
          f"sees it, each mapping's output is {matched.min():.2f}-{matched.max():.2f} times the RMS of the scale it "
          f"feeds (match_scale: {config.model.fusion.match_scale}, matched on up to 64 training images, this is a batch of {len(x)})")
    if config.model.fusion.match_scale:
        assert ((matched - 1).abs() < 0.15).all(), matched
    display(plots.fusion_weights(weights))

# %% [markdown]
# ### 2. Coordinate attention, inside the reverse-distillation structure
#
# > **The papers' words.** The 2024 paper puts *coordinate attention* inside the
# > reverse-distillation structure.
#
# > **Coordinate attention** itself (Hou et al., CVPR 2021) is channel attention that keeps
# > position. For $x \in \mathbb{R}^{C \times H \times W}$ it averages along each direction,
# >
# > $$z^h_c(i) = \frac{1}{W}\sum_{j} x_c(i, j), \qquad z^w_c(j) = \frac{1}{H}\sum_{i} x_c(i, j),$$
# >
# > passes both through one shared 1 × 1 convolution to $m = \max(8, C/32)$ channels, BatchNorm
# > and h-swish, $f = \delta\big(\mathrm{BN}(W_1 [z^h; z^w])\big)$, splits $f$ back into $f^h, f^w$ and
# > gives one attention vector per direction,
# >
# > $$a^h = \sigma(W_h f^h) \in (0, 1)^{C \times H}, \qquad a^w = \sigma(W_w f^w) \in (0, 1)^{C \times W},
# > \qquad y_c(i, j) = x_c(i, j)\, a^h_c(i)\, a^w_c(j).$$
#
# > **The kit's interpretation.** Where "inside" is, `model.attention.placement` says: `ocbe`
# > (the profiles' choice) puts one module on the OCBE's concatenated input; `both` adds one after
# > each of the three decoder stages (four modules); `decoder` keeps only those three. The choice
# > of `ocbe` rests on single-seed runs of each placement on Magnetic Tile Defects, listed in
# > `benchmarks/additions.md`; no notebook recomputes them, and one seed measures no difference.
#
# Below, the attention of this untrained model on the batch, as the first training step sees
# it (BatchNorm on the batch's statistics, as for the fusion above). The map drawn is
# $\frac{1}{C}\sum_c a^h_c(i)\, a^w_c(j)$ on the full range [0, 1]. The cell prints the product's
# mean (with the sigmoids averaging about 0.5, about a quarter) and its **spread** over
# positions (each channel's std over positions, averaged, over the mean: the diagnostics'
# measure): whether the untrained module scales its input evenly is that number against the
# 0.05 under which the diagnostics call a site inert. The last line is the same module in eval
# mode with `start.pt`'s initial BatchNorm statistics, which no training step uses.

# %%
if not config.model.attention.enabled:
    print("coordinate attention is switched off in this profile (model.attention.enabled=false)")
else:
    with diagnostics.batch_statistics(student):  # as the first training step sees it
        sites = diagnostics.attention_maps(student, F_teacher)  # per site (module name): its input, (a_h, a_w), figures
    in_eval_mode = diagnostics.attention_maps(student, F_teacher)
    names = [diagnostics.site_title(name) for name in sites]
    print(f"placement '{config.model.attention.placement}': attention at {', '.join(names)}")
    threshold = diagnostics.ATTENTION_MIN_SPREAD
    for name, site, other in zip(names, sites.values(), in_eval_mode.values()):
        (a_h, a_w), figures = site["attention"], site["figures"]
        assert abs(figures["mean"] - diagnostics.ATTENTION_UNTRAINED) < 0.05, figures  # "about a quarter"
        print(f"{name:16s} a_h {tuple(a_h.shape[1:])}, a_w {tuple(a_w.shape[1:])}: a_h·a_w has mean {figures['mean']:.3f} "
              f"(from {figures['min']:.3f} to {figures['max']:.3f}) and spread over positions {figures['spread']:.3f}, "
              f"{'above' if figures['spread'] >= threshold else 'below'} the {threshold} under which a site is inert: "
              f"it scales its input {'unevenly' if figures['spread'] >= threshold else 'evenly'}")
        shut = float(((other["attention"][0] * other["attention"][1]).flatten(2).mean(2) < 0.01).float().mean())
        print(f"{'':16s} eval mode, initial statistics: mean {other['figures']['mean']:.3f}, from "
              f"{other['figures']['min']:.3f} to {other['figures']['max']:.3f}, spread {other['figures']['spread']:.3f}, "
              f"{100 * shut:.0f} % of the channels all but shut (mean below 0.01)")
    display(plots.attention_maps(train.images[:2], [(s["attention"][0][:2], s["attention"][1][:2]) for s in sites.values()],
                                 names, ["normal", "normal"], spreads=[s["figures"]["spread"] for s in sites.values()]))

# %% [markdown]
# **Coordinate attention by hand**, on the OCBE's input: the two poolings, the shared
# 1 × 1 convolution, BatchNorm (eval: running statistics), h-swish
# $\delta(u) = u\,\operatorname{ReLU6}(u + 3)/6$, the two sigmoids and the product, using only
# the module's weights, against the module's own forward.

# %%
ca = student.bottleneck.attention
if isinstance(ca, CoordinateAttention):
    with torch.inference_mode():
        u = joined                                                       # (B, C, H, W)
        H, W = u.shape[-2:]
        z_h, z_w = u.mean(dim=3), u.mean(dim=2)                          # (B, C, H), (B, C, W)
        conv, bn = ca.squeeze[0], ca.squeeze[1]
        f = torch.einsum("mc,bcl->bml", conv.weight[:, :, 0, 0], torch.cat([z_h, z_w], dim=2)) + conv.bias[:, None]
        f = (f - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None] + bn.bias[:, None]
        f = f * torch.clamp(f + 3, 0, 6) / 6                             # h-swish
        f_h, f_w = f[..., :H], f[..., H:]
        a_h = torch.sigmoid(torch.einsum("cm,bml->bcl", ca.to_h.weight[:, :, 0, 0], f_h) + ca.to_h.bias[:, None])
        a_w = torch.sigmoid(torch.einsum("cm,bml->bcl", ca.to_w.weight[:, :, 0, 0], f_w) + ca.to_w.bias[:, None])
        y = u * a_h[..., :, None] * a_w[..., None, :]                    # y_c(i, j) = x_c(i, j) a^h_c(i) a^w_c(j)
        packaged = ca(u)
        # relative to the largest value: the teacher's features reach tens, where float32 rounds at ~1e-6
        difference = float((y - packaged).abs().max() / packaged.abs().max())
    assert difference < 1e-5
    print(f"coordinate attention by hand = dhkd.method.CoordinateAttention on {tuple(u.shape[1:])}: "
          f"m = {conv.weight.shape[0]} squeezed channels, largest relative difference {difference:.1e}")
else:
    print("no attention on the OCBE input in this profile")

# %% [markdown]
# ### 3. The single-category memory bank, on the embedding
#
# > **The papers' words.** The 2024 paper adds *a single-category embedding memory bank* that
# > normalises the embedding of one category.
#
# > **The kit's interpretation**, after MemAE (Gong et al., ICCV 2019). The bank holds $N$
# > learnable items $m_1, \dots, m_N$ (default 50) of the embedding's dimension. Every position
# > $p$ of $z$ addresses them by cosine similarity,
# >
# > $$w_{p,i} = \operatorname{softmax}_i\big(\cos(z_p, m_i)/\tau\big), \qquad
# > \hat w_{p,i} = \frac{\max(w_{p,i} - \lambda, 0)\, w_{p,i}}{|w_{p,i} - \lambda| + \epsilon}
# > \quad (\text{MemAE's hard shrinkage}, \lambda = 1/N),$$
# >
# > renormalises $\hat w$ to sum to one and reads out $\hat z_p = \sum_i \hat w_{p,i}\, m_i$.
# > The decoder receives $\hat z$ (or $z + \hat z$ with `model.memory.residual: true`, the
# > profiles' choice). Trained on normal images only, the items hold normal patterns. With
# > $\hat z$ alone, an anomaly's embedding would be replaced by normal items; with the
# > residual read-out the profiles use, **$z$ reaches the decoder unchanged** and the bank only
# > adds a normal pattern to it, so it cannot remove an anomaly by itself (notebook 06 measures
# > the read-out's share of the decoder input). The temperature $\tau$ (0.05) is the kit's
# > addition: without it a softmax over cosines in $[-1, 1]$ is almost uniform. The training
# > start puts the items at k-means centres of the normal embeddings.

# %%
if student.memory is None:
    print("the memory bank is switched off in this profile (model.memory.enabled=false)")
else:
    with torch.inference_mode():
        z = student.bottleneck(student.fusion(F_teacher) if student.fusion else F_teacher)
        addressing = student.memory.address(z).cpu()  # (B, h, w, N)
    items_read = (addressing > 0).sum(-1).float()
    print(f"{student.memory.items.shape[0]} items of dimension {student.memory.items.shape[1]}; "
          f"addressing weights {tuple(addressing.shape[1:])} per image")
    print(f"untrained: each position reads {items_read.mean():.1f} items on average after shrinkage "
          f"(between {items_read.min():.0f} and {items_read.max():.0f}); top weight {addressing.max(-1).values.mean():.2f}")
    display(plots.memory_item_maps(train.images[:2], addressing[:2], ["normal", "normal"]))

# %% [markdown]
# **The addressing by hand**: cosine similarities, the tempered softmax, MemAE's shrinkage, the
# renormalisation and the read-out, against `MemoryBank.address` and the bank's forward.

# %%
bank = student.memory
if bank is not None:
    with torch.inference_mode():
        q = z.permute(0, 2, 3, 1)                                            # (B, h, w, C): one query per position
        cos = (q / q.norm(dim=-1, keepdim=True)) @ (bank.items / bank.items.norm(dim=-1, keepdim=True)).T
        w = torch.softmax(cos / bank.temperature, dim=-1)                    # w_{p,i}
        lam = bank.threshold                                                 # 1 / N
        w_hat = torch.relu(w - lam) * w / ((w - lam).abs() + 1e-12)          # hard shrinkage
        w_hat = w_hat / w_hat.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        z_hat = (w_hat @ bank.items).permute(0, 3, 1, 2)                     # sum_i w_hat_{p,i} m_i
        decoder_input = z + z_hat if bank.residual else z_hat
        assert torch.allclose(w_hat, bank.address(z), atol=1e-6) and torch.allclose(decoder_input, bank(z), rtol=1e-5, atol=1e-5)
    share = float((decoder_input - z).norm() / decoder_input.norm()) if bank.residual else 1.0
    print(f"addressing and read-out by hand = dhkd.method.MemoryBank (λ = 1/{len(bank.items)}, τ = {bank.temperature}); "
          f"residual {bank.residual}: the read-out is {100 * share:.0f} % of the decoder input's norm")

# %% [markdown]
# ### 4. The second training stage (notebook 03)
#
# > **The papers' words.** The KBS 2023 paper's title: *two-stage reverse knowledge distillation
# > incorporated and self-supervised masking strategy*.
#
# > **The kit's interpretation.** Stage 1 is plain reverse distillation; stage 2 (the last
# > `masking.stage2_fraction` of the epochs) feeds the bottleneck the teacher's features of a
# > masked image $\tilde x$ and asks for the clean image's features: the same loss with the
# > corrupted input, $\mathcal{L}\big(T(x), S(T(\tilde x))\big)$ (notebook 03 writes one such step
# > by hand). The student is trained to *undo* defects instead of copying them.
#
# | addition | meant to (papers) | where | switch |
# | --- | --- | --- | --- |
# | mutual-mapping fusion | fuse levels inhomogeneously | `dhkd/method/fusion.py` | `model.fusion.enabled` |
# | coordinate attention | attention inside RD | `dhkd/method/attention.py` | `model.attention.enabled` |
# | memory bank | normalise the category's embedding | `dhkd/method/memory.py` | `model.memory.enabled` |
# | masking stage | self-supervised masking, two stages | `dhkd/method/masking.py`, `dhkd/run/train.py` | `masking.enabled` |
#
# `make ablation` trains the RD baseline, each addition alone on top of it, then all of them,
# and writes one table per category: what each part contributes *in this implementation*.

# %% [markdown]
# ### 5. Does each addition act? The diagnostics
#
# A module can be switched on and still do nothing: a fusion whose borrowed terms are a few
# percent of each scale, attention maps that are nearly constant, a memory read-out the decoder
# ignores. `dhkd.run.diagnostics.diagnose` measures, on a few normal images, one figure per
# addition, and calls the addition **inert** below a documented threshold:
#
# | addition | figure | inert below |
# | --- | --- | --- |
# | fusion | borrowed share $\lVert G_s - F_s \rVert / \lVert G_s \rVert$ per scale; mixing weights against 0.5 | largest share `FUSION_MIN_BORROWED_SHARE` |
# | attention | spread of $a^h a^w$ over positions (std / mean) per site | every site under `ATTENTION_MIN_SPREAD` |
# | memory | read-out's share of the decoder input; effectively used items; mean top weight | `MEMORY_MIN_READOUT_SHARE` or `MEMORY_MIN_EFFECTIVE_ITEMS` |
# | masking | stage-2 loss against stage 1 (training history); how much of a corruption the student undoes | restoration under `MASKING_MIN_RESTORATION` |
#
# Below, the model as training starts it, as the first step sees it. The evaluation (notebook 04) records the same
# figures for a trained run under `diagnostics` in its `metrics.json`; notebook 06 draws them,
# and the ablation tables list them per variant.

# %%
print({name: value for name, value in diagnostics.THRESHOLDS.items()})
# as the first training step sees the model (BatchNorm on the batch's statistics), as above
untrained_diagnostics = diagnostics.diagnose(model, config, train.images[:8].to(dev), as_training=True)
display(plots.addition_diagnostics(untrained_diagnostics))
print("inert at the start:", ", ".join(untrained_diagnostics["inert"]) or "none")

# %% [markdown]
# ## What to take from this
#
# - Reverse distillation detects anomalies by *failing to reconstruct* them: the student only
#   sees the teacher's features through a narrow one-class embedding, learned on normal images,
#   and rebuilds them with a decoder that mirrors the teacher.
# - The loss and the anomaly map are the same quantity, $1 - \cos(F_s, S_s)$: flattened per
#   image for training, per position for the map.
# - DHKD's additions are small modules around that core, each a few lines by hand: fusion
#   before the bottleneck, coordinate attention on its input, a memory bank on $z$ (with the
#   profiles' residual read-out, $z$ itself still reaches the decoder). At the start, as the
#   first training step sees it, the fusion mixes its sources evenly (0.5) with each mapping
#   at the size of the scale it feeds, the attention scales by about a quarter on average but
#   not evenly over positions (the spread printed above), and the memory items sit at k-means
#   centres; notebook 06 shows how far training moves them.
# - A model as training starts it is measured with BatchNorm on the batch's statistics: its
#   running statistics are still the initial ones, and in eval mode they make the fusion and
#   the attention compute something no training step does.
#
# ## Questionnaire
#
# 1. *Why can the student not simply copy the teacher?* It sees the features only through the
#    bottleneck embedding $z$, several times smaller than what it must rebuild.
# 2. *What does the untrained attention do?* As the first training step sees it, it scales its
#    input by about 0.25 on average, but not evenly: the product varies over positions by more
#    than the 0.05 of its mean under which the diagnostics would call it inert.
# 3. *With `residual: true`, what does the decoder receive?* $z + \hat z$: the embedding itself
#    plus the memory's read-out.
# 4. *Why the temperature in the addressing?* Cosines lie in $[-1, 1]$; without dividing by
#    $\tau$ the softmax over 50 items is nearly uniform.
#
# ## Try this
#
# Each exercise has a solution cell below (collapsed; it runs when `solutions = True`).
#
# 1. **RD4AD alone.** Build the model with `fusion`, `attention` and `memory` off.
#    *What you should see:* the fusion and memory parameters drop to zero, the OCBE loses its
#    attention's few thousand, and the squeeze factor stays the same ($z$'s shape does not change).
# 2. **Fewer memory items.** Build a bank of 10 items. *What you should see:* the shrinkage bar
#    $1/N$ rises to 0.1, so a position keeps fewer, larger weights.
# 3. **A softer memory.** Address with $\tau = 0.5$. *What you should see:* the weights turn
#    almost uniform (the top weight falls towards $1/N$) and the read-out tends to the items'
#    mean, the same for every position; the residual mode still passes $z$ through.

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 1: RD4AD's student beside this profile's, built (no training needed to count).
if solutions:
    rd_config = copy.deepcopy(config)
    rd_config.model.fusion.enabled = rd_config.model.attention.enabled = rd_config.model.memory.enabled = False
    rd = build_model(rd_config.model, config.train.seed).to(dev).eval()
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0
    display(pd.DataFrame({"this profile": {name: count(getattr(student, name)) for name in ("fusion", "bottleneck", "memory", "decoder")},
                          "RD4AD": {name: count(getattr(rd.student, name)) for name in ("fusion", "bottleneck", "memory", "decoder")}}))
    with torch.inference_mode():
        print(f"z: {tuple(student.bottleneck_embedding(F_teacher).shape[1:])} here, "
              f"{tuple(rd.student.bottleneck_embedding(F_teacher).shape[1:])} in RD4AD")

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solutions 2 and 3: the same embedding z addressed by other banks (copies; the model is untouched).
if solutions and student.memory is not None:
    from dhkd.method import MemoryBank

    with torch.no_grad():
        z = student.bottleneck_embedding(F_teacher)
    fewer = MemoryBank(z.shape[1], items=10, residual=student.memory.residual).to(dev)
    fewer.init_from_embeddings(z, seed=config.train.seed)  # k-means, as training starts a bank
    softer = copy.deepcopy(student.memory)
    softer.temperature = 0.5
    banks = {"this bank": student.memory, "10 items": fewer, "τ = 0.5": softer}
    with torch.inference_mode():
        rows = {}
        for name, b in banks.items():
            w = b.address(z)
            rows[name] = {"items": len(b.items), "1/N": 1 / len(b.items), "items read per position": float((w > 0).sum(-1).float().mean()),
                          "top weight": float(w.max(-1).values.mean()),
                          "read-out spread over positions": float(b.readout(z).std(dim=(2, 3)).mean())}
    display(pd.DataFrame(rows).T.round(3))

# %% [markdown]
# ---
# ← [01 · What the frozen teacher sees](01_teacher_features.ipynb) ·
# [03 · Training: two stages, live loss, checkpoints](03_training.ipynb) →
# · the kit's account of the method, every setting and where it lives: [docs/method.md](../docs/method.md)

# %% [markdown]
# ### Papers
#
# - **RD4AD**: Deng & Li, *Anomaly Detection via Reverse Distillation from One-Class Embedding*, CVPR 2022, [arXiv:2201.10703](https://arxiv.org/abs/2201.10703).
# - **Coordinate attention**: Hou, Zhou & Feng, *Coordinate Attention for Efficient Mobile Network Design*, CVPR 2021, [arXiv:2103.02907](https://arxiv.org/abs/2103.02907).
# - **MemAE**: Gong et al., *Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised Anomaly Detection*, ICCV 2019, [arXiv:1904.02639](https://arxiv.org/abs/1904.02639).
# - **MVTec AD**: Bergmann, Fauser, Sattlegger & Steger, *MVTec AD — A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection*, CVPR 2019 ([the data set's page](https://www.mvtec.com/company/research/datasets/mvtec-ad); journal version: IJCV 129:1038–1059, 2021, [doi:10.1007/s11263-020-01400-4](https://doi.org/10.1007/s11263-020-01400-4)).
# - **DHKD**: Tong, Li & Song, *Two-stage reverse knowledge distillation incorporated and Self-Supervised Masking strategy for industrial anomaly detection*, Knowledge-Based Systems 273:110611, 2023; and *Enhanced multi-scale features mutual mapping fusion based on reverse knowledge distillation for industrial anomaly detection and localization*, IEEE Transactions on Big Data 10(4):498–513, 2024.
