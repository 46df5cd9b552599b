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
# # 06 · What the trained modules learned
#
# Notebook 02 built DHKD's student untrained: the fusion mixed its sources evenly, the
# attention scaled everything by about a quarter, the memory bank read many items weakly.
# This notebook opens the trained run of notebook 03 and asks how far training moved each
# module away from that start.
#
# Every comparison here is against **the exact weights training started from**: the kit
# seeds the model before building it (`dhkd.method.build_model(config.model, seed)`), so
# building it again with the run's seed gives the untrained student of this run. Maps are
# drawn on scales that include zero change, with colourbars, and every section ends with the
# change in numbers. A module that barely moved is said to have barely moved: a colourful
# picture of a tiny difference is not a finding.

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

from dhkd.notebook import plots
from dhkd.data import load_split, normalize
from dhkd.run.evaluate import load_model
from dhkd.method import CoordinateAttention
from dhkd.run.build import build_model
from dhkd.data.toy import ensure_category
from dhkd.run.folder import read_run_info
from dhkd.run.device import resolve_device

ensure_category(data_root, category)
dev = resolve_device(device)
run_dir = Path(out_dir) / category
trained, config = load_model(run_dir, dev)
untrained = build_model(config.model, config.train.seed).to(dev).eval()  # where training started
info = read_run_info(run_dir)
switches = {name: getattr(config.model, name).enabled for name in ("fusion", "attention", "memory")}
print(f"run out_dir/{category}: profile {config.profile}, {info['epochs_done']} of {config.train.epochs} epochs "
      f"trained, additions {switches}")

test = load_split(data_root, category, "test", config.data.image_size, progress=False)
kinds = sorted(set(test.defect_types) - {"good"})
picked = [test.defect_types.index("good")] + [test.defect_types.index(k) for k in kinds[:2]]
titles = [test.defect_types[i] for i in picked]
with torch.inference_mode():
    features = trained.teacher(normalize(test.images[picked].to(dev)))  # the teacher is the same in both models

# %% [markdown]
# ## How far each module moved
#
# The relative change of every module's parameters, $\lVert \theta - \theta_0 \rVert /
# \lVert \theta_0 \rVert$ (BatchNorm's running statistics not included). Large numbers mean
# the module was reshaped; numbers near zero mean it stayed where it started.

# %%
def relative_change(after: torch.nn.Module | None, before: torch.nn.Module | None) -> float:
    if after is None:
        return float("nan")
    new = torch.cat([p.detach().flatten() for p in after.parameters()])
    old = torch.cat([p.detach().flatten() for p in before.parameters()])
    return float((new - old).norm() / old.norm())


pairs = {"fusion": (trained.student.fusion, untrained.student.fusion),
         "OCBE (with its attention)": (trained.student.bottleneck, untrained.student.bottleneck),
         "memory bank": (trained.student.memory, untrained.student.memory),
         "decoder (with its attention)": (trained.student.decoder, untrained.student.decoder)}
moved = pd.Series({name: relative_change(*pair) for name, pair in pairs.items()}, name="relative change, %") * 100
display(moved.round(1).to_frame())

# %% [markdown]
# ## Mutual-mapping fusion: did the mixture move?
#
# Every target scale $s$ mixes its two sources with $w_s = \operatorname{softmax}(a_s)$, and
# the logits $a_s$ start at zero, so every $w_{st}$ starts at exactly 0.5. The heatmap shows
# the trained weight minus 0.5, on a scale centred at zero.

# %%
if trained.student.fusion is None:
    print("fusion is switched off in this run (model.fusion.enabled=false)")
else:
    with torch.no_grad():
        w = trained.student.fusion.mixing_weights().cpu()
        w0 = untrained.student.fusion.mixing_weights().cpu()
    off_diagonal = ~torch.eye(3, dtype=torch.bool)
    largest = float((w - w0)[off_diagonal].abs().max())
    display(plots.fusion_weights(w, reference=w0))
    if largest < 0.01:
        print(f"The weights stayed within {largest:.3f} of uniform (0.5): the fusion did not learn a preference "
              f"between its sources. What it did learn sits in the mappings M_ts "
              f"({moved['fusion']:.1f} % relative change of the fusion's parameters).")
    else:
        for s in range(3):
            t = max(trained.student.fusion.sources(s), key=lambda t: float(w[s, t]))
            print(f"G{s + 1} leans towards F{t + 1}: w = {w[s, t]:.3f} (untrained 0.5)")

# %% [markdown]
# ## Coordinate attention: where does it look now?
#
# For each attention module (`model.attention.placement` says where they sit), the map
# $\frac{1}{C}\sum_c a^h_c(i)\,a^w_c(j)$ of the trained model on its full range [0, 1] (top
# figure), then its change from the untrained model on a scale centred at zero (bottom figure).
# Both models get the same teacher features.

# %%
def attention_sites(student: torch.nn.Module) -> dict[str, CoordinateAttention]:
    """The coordinate-attention modules of a student by site; the other sites hold identities."""
    sites = {"OCBE input": student.bottleneck.attention,
             **{f"decoder stage {i}": m for i, m in enumerate(student.decoder.attentions, start=1)}}
    return {name: module for name, module in sites.items() if isinstance(module, CoordinateAttention)}


def attention_maps_of(student: torch.nn.Module, teacher_features: list[torch.Tensor]) -> list:
    """(a_h, a_w) of every coordinate-attention module for these features, from its actual input."""
    modules = list(attention_sites(student).values())
    inputs: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, args, _out, i=i: inputs.__setitem__(i, args[0]))
             for i, m in enumerate(modules)]
    try:
        with torch.inference_mode():
            student(teacher_features)
            return [m.attention(inputs[i]) for i, m in enumerate(modules)]
    finally:
        for hook in hooks:
            hook.remove()


if not attention_sites(trained.student):
    print("coordinate attention is switched off in this run (model.attention.enabled=false)")
else:
    names = list(attention_sites(trained.student))
    after = attention_maps_of(trained.student, features)
    before = attention_maps_of(untrained.student, features)
    display(plots.attention_maps(test.images[picked], after, names, titles))
    display(plots.attention_maps(test.images[picked], after, names, titles, reference=before))
    for name, (a_h, a_w), (b_h, b_w) in zip(names, after, before):
        now, start = (a_h * a_w).mean(1), (b_h * b_w).mean(1)
        spread = float(now.max() - now.min())
        kind = ("nearly constant: a gain on the whole map, not a spatial attention" if spread < 0.02
                else "varies across positions")
        print(f"{name:16s} trained map between {now.min():.3f} and {now.max():.3f} ({kind}); "
              f"mean change from untrained {float((now - start).abs().mean()):.3f}")

# %% [markdown]
# ## The memory bank: which items are read?
#
# Left: the mean addressing weight of every item, for good and for defective test images
# (eight of each). Right: how many items a position reads after the shrinkage. Below, the
# same count for the untrained bank, and how many items carry 90 % of all reads.

# %%
def addressing_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        f = model.teacher(normalize(images.to(dev)))
        student = model.student
        z = student.bottleneck(student.fusion(f) if student.fusion is not None else f)
        return student.memory.address(z).cpu()  # (B, h, w, N)


def items_for(weights: torch.Tensor, share: float = 0.9) -> int:
    usage = weights.reshape(-1, weights.shape[-1]).mean(0).sort(descending=True).values
    return int((usage.cumsum(0) < share * usage.sum()).sum()) + 1


if trained.student.memory is None:
    print("the memory bank is switched off in this run (model.memory.enabled=false)")
else:
    good = [i for i, kind in enumerate(test.defect_types) if kind == "good"][:8]
    bad = [i for i, kind in enumerate(test.defect_types) if kind != "good"][:8]
    addressing = {"good": addressing_of(trained, test.images[good]),
                  "defective": addressing_of(trained, test.images[bad])}
    display(plots.memory_usage(addressing))
    display(plots.memory_item_maps(test.images[picked], addressing_of(trained, test.images[picked]), titles))
    start = addressing_of(untrained, test.images[good])
    rows = {"untrained, good images": start, "trained, good images": addressing["good"],
            "trained, defective images": addressing["defective"]}
    display(pd.DataFrame({name: {"items read per position": float((w > 0).sum(-1).float().mean()),
                                 "top weight": float(w.max(-1).values.mean()),
                                 "items carrying 90 % of reads": items_for(w)} for name, w in rows.items()}).T.round(2))

# %% [markdown]
# ## The evaluation's verdict: does each addition act?
#
# Notebook 04's evaluation also recorded, under `diagnostics` in the run's `metrics.json`
# (`dhkd/run/diagnostics.py`), one figure per addition that says whether it changes what the
# student computes, measured on 16 training images, with the threshold below which the
# addition counts as **inert** (acting on less than about a tenth of what it touches). Inert
# does not mean "does not help" and active does not mean "helps": that is the ablation's
# question (`make ablation`, several seeds).

# %%
import json

from dhkd.run import diagnostics as diagnosis

recorded = json.loads((run_dir / "metrics.json").read_text())["diagnostics"]
verdict = []
if recorded["fusion"]["enabled"]:
    verdict.append(("fusion", "largest borrowed share ‖G_s − F_s‖ / ‖G_s‖", max(recorded["fusion"]["borrowed_share"]),
                    diagnosis.FUSION_MIN_BORROWED_SHARE, recorded["fusion"]["inert"]))
if recorded["attention"]["enabled"]:
    spreads = {site: figures["spread"] for site, figures in recorded["attention"]["sites"].items()}
    verdict.append(("attention", "largest spread of a_h·a_w over positions (std / mean)", max(spreads.values()),
                    diagnosis.ATTENTION_MIN_SPREAD, recorded["attention"]["inert"]))
if recorded["memory"]["enabled"]:
    verdict.append(("memory", "read-out's share of the decoder input", recorded["memory"]["readout_share"],
                    diagnosis.MEMORY_MIN_READOUT_SHARE, recorded["memory"]["inert"]))
    verdict.append(("memory", "effectively used items", recorded["memory"]["effective_items"],
                    diagnosis.MEMORY_MIN_EFFECTIVE_ITEMS, recorded["memory"]["inert"]))
if recorded["masking"]["enabled"] and "restoration" in recorded["masking"]:
    verdict.append(("masking", "restoration of corrupted regions", recorded["masking"]["restoration"],
                    diagnosis.MASKING_MIN_RESTORATION, recorded["masking"]["inert"]))
display(pd.DataFrame(verdict, columns=["addition", "figure", "value", "inert below", "inert"]).set_index("addition")
        .round(3))
display(plots.addition_diagnostics(recorded))
inert = recorded["inert"]
print("inert additions in this run: " + (", ".join(inert) if inert else "none") +
      f" (after {info['epochs_done']} epochs on {recorded['images']} training images)")

# %% [markdown]
# ## Does each addition help? The ablation
#
# Acting is not helping. `make ablation` trains plain RD, RD with each addition alone and all
# of them, once per seed, and compares each with RD trained with the same seed. Below, the
# ablation of this run's results folder, if `make ablation` wrote one there (it looks in
# `ablation_dir`; the README shows the kit's own tables). A bar whose error bar (± the spread of
# the paired difference over seeds) crosses zero is no measured difference, whatever its size.

# %%
from dhkd.kit import tables

ablation_dir = Path(out_dir).parent  # make reproduce's results folder: results/<data>/<profile>
found = tables.load_ablation(ablation_dir)
if category not in found:
    print(f"no ablation of '{category}' under {ablation_dir / 'ablation'}; make ablation writes one, e.g.\n"
          f"  make ablation DATA=<data> CATEGORIES={category} PROFILE={config.profile} SEEDS=\"111 112 113\"")
else:
    ablation = tables.ablation_table(found[category])
    display(ablation[["Image AUROC", "Δ Image AUROC", "Δ Image AUROC std", "Pixel AUROC", "Δ Pixel AUROC",
                      "Δ Pixel AUROC std", "Seeds", "Inert additions"]])
    display(plots.ablation_deltas(ablation))
    print(tables.ablation_contrast(found[category]).strip())

# %% [markdown]
# ## What to take from this
#
# - Compare a trained module with its own starting point, not with an empty canvas: the
#   untrained fusion already reads 0.5 and the untrained attention about 0.25, so those
#   numbers alone say nothing.
# - A short run (the toy set's few epochs) moves the convolutions much more than the few
#   scalar mixing weights; unmoved fusion weights mean the mixture stayed even, not that the
#   fusion does nothing (its mappings still add the other scales).
# - Whether a module *helps* is a different question, answered by `make ablation` over several
#   seeds, not by these pictures.
#
# ## Try this
#
# 1. **Train longer.** Run notebook 03 with `epochs = 20` into `out_dir = "../runs/twenty"`,
#    then this notebook with the same `out_dir`: do the fusion weights leave 0.5, and does any
#    attention map stop being nearly constant?
# 2. **Fewer memory items.** Train with `config.model.memory.items = 10` (notebook 03,
#    configuration cell) and compare "items carrying 90 % of reads" with the 50-item bank.
# 3. **Good against defective.** In the memory cell, compare the two bars of the most-read
#    items: do defective images address the bank differently from good ones, or do they
#    borrow the same normal items (which is what the memory bank is for)?
#
# ---
# ← [05 · Visual analysis](05_visual_analysis.ipynb) ·
# [07 · Results tables: the kit beside the paper](07_results_tables.ipynb) →

# %% [markdown]
# ### Papers
#
# - **RD4AD**: Deng & Li, *Anomaly Detection via Reverse Distillation from One-Class Embedding*, CVPR 2022, [arXiv:2201.10703](https://arxiv.org/abs/2201.10703).
# - **Coordinate attention**: Hou, Zhou & Feng, *Coordinate Attention for Efficient Mobile Network Design*, CVPR 2021, [arXiv:2103.02907](https://arxiv.org/abs/2103.02907).
# - **MemAE**: Gong et al., *Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised Anomaly Detection*, ICCV 2019, [arXiv:1904.02639](https://arxiv.org/abs/1904.02639).
# - **MVTec AD**: Bergmann, Fauser, Sattlegger & Steger, *MVTec AD — A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection*, CVPR 2019 ([the data set's page](https://www.mvtec.com/company/research/datasets/mvtec-ad); journal version: IJCV 129:1038–1059, 2021, [doi:10.1007/s11263-020-01400-4](https://doi.org/10.1007/s11263-020-01400-4)).
# - **DHKD**: Tong, Li & Song, *Two-stage reverse knowledge distillation incorporated and Self-Supervised Masking strategy for industrial anomaly detection*, Knowledge-Based Systems 273:110611, 2023; and *Enhanced multi-scale features mutual mapping fusion based on reverse knowledge distillation for industrial anomaly detection and localization*, IEEE Transactions on Big Data 10(4):498–513, 2024.
