"""DHKD: reverse knowledge distillation with mutual-mapping fusion, coordinate attention,
a single-category memory bank and a self-supervised masking stage, for anomaly detection
and localisation on MVTec AD.

The package is laid out one concept per module:

- :mod:`dhkd.config`      typed configuration tree and YAML profiles
- :mod:`dhkd.data.mvtec`        MVTec AD category loading and validation
- :mod:`dhkd.data.dataset_file` data sets in any folder layout, described by a YAML file
- :mod:`dhkd.data.toy`         the embedded toy data set the kit generates itself
- :mod:`dhkd.method`      teacher, fusion, attention, bottleneck, memory, decoder, DHKD
- :mod:`dhkd.method.loss`        the cosine distillation loss
- :mod:`dhkd.method.masking`     corruptions for the self-supervised masking stage
- :mod:`dhkd.method.anomaly_map` anomaly maps and image scores
- :mod:`dhkd.metrics.curves`     AUROC, AUPRO (official) and RD4AD's PRO
- :mod:`dhkd.run.train`       the two-stage training loop and checkpoints
- :mod:`dhkd.run.evaluate`    evaluation of a trained run
- :mod:`dhkd.run.predict`   ``dhkd predict`` / :func:`dhkd.predict`: scoring new images
- :mod:`dhkd.run.export`    ``dhkd export``: a run as one ONNX file (scored by :mod:`dhkd.run.onnx_scoring`)
- :mod:`dhkd.metrics.thresholds`  confusion counts, F1, IoU at a threshold (for the widgets)
- :mod:`dhkd.notebook.widgets`     threshold explorer, failure browser, run comparison
- :mod:`dhkd.notebook.plots`       the notebooks' figures
- :mod:`dhkd.kit.tables`      results tables rebuilt from the per-category JSON files
- :mod:`dhkd.kit.reproduce`   ``make reproduce`` / ``make ablation``: papermill over the notebooks
- :mod:`dhkd.cli`         the ``dhkd`` command

Benchmarks and profile tuning live beside the package, in the checkout's ``benchmarks/``;
``docs/method.md`` is the method in full.
"""

from dhkd.errors import DhkdError

__all__ = ["DhkdError", "predict"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # dhkd.predict without importing torch on `import dhkd`
    if name == "predict":
        from dhkd.run.predict import predict

        return predict
    raise AttributeError(f"module 'dhkd' has no attribute {name!r}")
