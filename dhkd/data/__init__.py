"""Data: images on disk to decoded tensors, for both kinds of data root.

- :mod:`dhkd.data.fit`          bringing an image to the network's input shape (squeezed, or its aspect kept)
- :mod:`dhkd.data.files`        items, problems and reading image files (the layer both layouts share)
- :mod:`dhkd.data.mvtec`        MVTec AD's folder layout
- :mod:`dhkd.data.dataset_file` data sets in any folder layout, described by a YAML file
- :mod:`dhkd.data.load`         loading a split from either kind of root
- :mod:`dhkd.data.split`        the decoded split and ImageNet normalisation
- :mod:`dhkd.data.toy`          the embedded toy data set the kit generates itself
- :mod:`dhkd.data.download`     MVTec AD's archive, downloaded and checked

The names below are the public interface; import them from ``dhkd.data``.
"""

from dhkd.data.files import IMAGE_SUFFIXES, binarize_mask, mask_levels
from dhkd.data.fit import Fit, as_fit, suggest_shape
from dhkd.data.load import StreamedImages, count_images, find_category, list_categories, load_split, stream_split, validate_category
from dhkd.data.mvtec import EXPECTED_LAYOUT, GET_DATA, MVTEC_CATEGORIES
from dhkd.data.split import IMAGENET_MEAN, IMAGENET_STD, CategorySplit, denormalize, normalize
from dhkd.data.load import MVTecDataset

__all__ = ["Fit", "as_fit", "suggest_shape", "IMAGE_SUFFIXES", "binarize_mask", "mask_levels", "count_images", "find_category", "list_categories",
           "load_split", "stream_split", "StreamedImages", "validate_category", "EXPECTED_LAYOUT", "GET_DATA", "MVTEC_CATEGORIES", "IMAGENET_MEAN",
           "IMAGENET_STD", "CategorySplit", "denormalize", "normalize", "MVTecDataset"]
