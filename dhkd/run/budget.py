"""What a training will hold in memory, estimated before it starts, and where its images live.

Training keeps by default every decoded training image (``3 H W`` bytes) and the teacher's
features of each (``4 (c₁ HW/16 + c₂ HW/64 + c₃ HW/256)`` bytes: 7.3 MB for the WRN50 teacher at
256 px, so 20,000 images would need 147 GB) on the device. :func:`plan_data` compares that with
the memory available there (a share of it: :data:`DATA_SHARE`; the model and its activations need
the rest) and, by ``train.stream``:

* ``auto``: everything in memory when it fits; else the images in memory and the teacher run per
  batch; else the images decoded from disk per batch as well (prefetched in threads).
* ``off``: in memory, or a :class:`DhkdError` with the estimate and the settings that fix it.
* ``on``: decoded per batch always (the feature cache kept only when it alone fits).

Where the memory cannot be measured, :data:`UNKNOWN_BYTES` is assumed, and the plan's note says
so. On CUDA the images are decoded into host memory before they move to the device, so an
in-memory plan must fit the host's memory as well as the device's.

The cache only saves the teacher's forward pass: with or without it a step sees the same
features of the same images, so these choices change the speed, not the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dhkd.config import Config
from dhkd.errors import DhkdError
from dhkd.method.teacher import stage_channels, stage_strides

DATA_SHARE = 0.5  # of the available memory, for the training data (images and cached features)
#: The memory assumed where it cannot be measured (no /proc/meminfo, another accelerator): a small
#: laptop's. Assuming that all fits would hold any data set in memory, however large; assuming
#: little streams a large one, slower but safe, and the plan says why.
UNKNOWN_BYTES = 2 * 10 ** 9


def image_bytes(config: Config) -> int:
    """One decoded training image: uint8, 3 x H x W."""
    height, width = config.data.shape
    return 3 * height * width


def feature_bytes(config: Config) -> int:
    """The teacher's float32 features of one image, all three levels."""
    height, width = config.data.shape
    stages = tuple(config.model.teacher.stages)
    return 4 * sum(c * (height // s) * (width // s)
                   for c, s in zip(stage_channels(config.model.teacher.name, stages), stage_strides(stages)))


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process on ``device`` (CUDA: free device memory; CPU: MemAvailable,
    bounded by a cgroup limit), or None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                room = int(limit) - int(Path(usage_file).read_text().strip())
                available = room if available is None else min(available, room)
            break
        except (OSError, ValueError):
            continue
    return available


def gigabytes(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


@dataclass
class DataPlan:
    """Where the training data lives, and the estimate it was chosen from."""

    images: int
    stream: bool  # decode per batch from disk
    cache: bool  # the teacher's features of the clean images kept across epochs
    image_bytes: int  # all images, decoded
    cache_bytes: int  # the whole feature cache
    available: int | None
    note: str = ""  # one line when the plan differs from what the settings asked

    @property
    def held_bytes(self) -> int:
        return (0 if self.stream else self.image_bytes) + (self.cache_bytes if self.cache else 0)

    def record(self) -> dict[str, object]:
        """For run.json."""
        return {"images": self.images, "stream": self.stream, "teacher_cache": self.cache,
                "held_bytes": self.held_bytes, "images_bytes": self.image_bytes, "cache_bytes": self.cache_bytes,
                "available_bytes": self.available}


def plan_data(config: Config, images: int, device: torch.device, available: int | None = None,
              host: int | None = None) -> DataPlan:
    """Choose in-memory or streamed training data for ``images`` training images (see the module
    docstring); ``available`` overrides the memory measured on ``device``, ``host`` the host's
    (counted on CUDA, where the images pass through it)."""
    available = available_bytes(device) if available is None else available
    unknown = available is None
    available = UNKNOWN_BYTES if unknown else available
    if device.type == "cuda":
        host = available_bytes(torch.device("cpu")) if host is None else host
        host = UNKNOWN_BYTES if host is None else host
    all_images, cache = images * image_bytes(config), images * feature_bytes(config)
    wants_cache = config.train.cache_teacher_features
    budget = DATA_SHARE * available
    host_budget = DATA_SHARE * host if host is not None and device.type == "cuda" else None

    def fits(n: int, with_images: bool = True) -> bool:
        """Whether ``n`` bytes fit on the device, and (on CUDA, ``with_images``) the images on the host."""
        return n <= budget and (host_budget is None or not with_images or all_images <= host_budget)

    mode = config.train.stream
    where = (f"{images} training images at {config.data.describe()} hold {gigabytes(all_images)} decoded"
             + (f" and {gigabytes(cache)} of {config.model.teacher.name} features (train.cache_teacher_features)"
                if wants_cache else "")
             + (f"; the memory of {device} could not be measured, so {gigabytes(available)} is assumed" if unknown
                else f"; {gigabytes(available)} are available on {device}")
             + (f" and {gigabytes(host)} on the host, which the images pass through" if host_budget is not None else "")
             + f" (the data may use {DATA_SHARE:.0%})")
    plan = DataPlan(images, False, wants_cache, all_images, cache, None if unknown else available)
    if mode == "on":
        plan.stream, plan.cache = True, wants_cache and fits(cache, with_images=False)
        if wants_cache and not plan.cache:
            plan.note = f"{where}: the teacher runs per batch (its cache would not fit)"
        return plan
    if fits(all_images + (cache if wants_cache else 0)):
        if unknown:
            plan.note = f"{where}: they fit even so, and stay in memory"
        return plan
    if mode == "off":
        raise DhkdError(f"the training data does not fit in memory: {where}",
                        "decode it from disk per batch: --set train.stream=on (or auto)"
                        + (", or keep only the images (without the feature cache): "
                           "--set train.cache_teacher_features=false" if wants_cache and fits(all_images) else "")
                        + "; or train on a smaller image size (data.image_size) or on another device")
    if wants_cache and fits(all_images):
        plan.cache = False
        plan.note = f"{where}: the images stay in memory, the teacher runs per batch (train.stream=auto)"
        return plan
    plan.stream, plan.cache = True, False
    plan.note = f"{where}: decoding the images from disk per batch, the teacher per batch (train.stream=auto)"
    return plan


#: Bytes per kept pixel while evaluating: the float32 map, its mask and valid bytes, and what the
#: pixel metrics' sorts and selections hold beside them (measured: about 4 times the map).
EVAL_PIXEL_BYTES = 24


def pixel_stride(images: int, shape: tuple[int, int], device: torch.device, available: int | None = None) -> tuple[int, str]:
    """The subsampling of the maps that evaluation keeps for the pixel metrics, and why.

    Image scores are always taken from the full maps; the pixel metrics (pixel AUROC, AUPRO, PRO)
    need every test pixel at once. Where ``images`` maps of ``shape`` would not fit in the share
    :data:`DATA_SHARE` of the memory available on ``device``, every ``stride``-th pixel in each
    direction is kept (stride 1: all). Returns ``(stride, note)``, the note empty at stride 1.
    """
    available = available_bytes(device) if available is None else available
    height, width = shape
    unknown = available is None
    available = UNKNOWN_BYTES if unknown else available
    budget = DATA_SHARE * available
    stride = 1
    while images * -(-height // stride) * -(-width // stride) * EVAL_PIXEL_BYTES > budget and stride < min(shape):
        stride += 1
    if stride == 1:
        return 1, ""
    full = images * height * width * EVAL_PIXEL_BYTES
    return stride, (f"the pixel metrics of {images} maps at {height} x {width} px would hold {gigabytes(full)}; "
                    + (f"the memory of {device} could not be measured, so {gigabytes(available)} is assumed"
                       if unknown else f"{gigabytes(available)} are available on {device}")
                    + f": they are computed on one pixel in {stride} "
                    f"along each side (metrics.json: pixel_stride); image scores use the full maps")

