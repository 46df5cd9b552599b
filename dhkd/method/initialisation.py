"""RD4AD's initialisation of the bottleneck (OCBE) and the decoder.

RD4AD's ``BN_layer`` and ``de_resnet`` (Deng & Li, CVPR 2022; anomalib copies them) end their
constructors with one loop over their modules: every ``nn.Conv2d`` gets
``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` and every BatchNorm weight 1, bias 0.
``nn.ConvTranspose2d`` is not an ``nn.Conv2d``, so the decoder's 2x2 upsampling convolutions
keep PyTorch's default (Kaiming-uniform with ``a=sqrt(5)``); so do they here. Torch's default
for ``nn.Conv2d`` gives a 1.7-4.9x smaller weight std, a different starting point than RD4AD's.

Modules RD4AD does not have keep PyTorch's defaults, as in the code they come from: coordinate
attention (Hou et al.'s reference code sets no init), the decoder's optional 1x1 output
projections (a linear read-out with no ReLU after it, for which a ReLU gain is wrong), and the
fusion's mappings and the memory items (built outside the OCBE and decoder, see their modules).
"""

from __future__ import annotations

from torch import nn

from dhkd.method.attention import CoordinateAttention

KIT_ONLY_MODULES: tuple[type[nn.Module], ...] = (CoordinateAttention,)


def rd4ad_initialise(module: nn.Module, keep: tuple[nn.Module, ...] = ()) -> None:
    """Initialise ``module`` as RD4AD does, skipping attention and the modules in ``keep``
    (with everything inside them)."""
    skipped = {id(m) for root in module.modules() if isinstance(root, KIT_ONLY_MODULES) for m in root.modules()}
    skipped |= {id(m) for root in keep for m in root.modules()}
    for m in module.modules():
        if id(m) in skipped:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
