"""Runs: a configuration and a data set in, a trained, evaluated run folder out.

- :mod:`dhkd.run.device`      the device, its clock, seeds, autocast and memory layout
- :mod:`dhkd.run.folder`      the files of a run folder, by name
- :mod:`dhkd.run.build`       configuration to the method's modules (the one place)
- :mod:`dhkd.run.train`       the two-stage training loop
- :mod:`dhkd.run.checkpoint`  checkpoints: saved atomically, loaded safely, checked against a config
- :mod:`dhkd.run.lock`        one writer per run folder
- :mod:`dhkd.run.evaluate`    a trained run's metrics on its test split (``dhkd evaluate``)
- :mod:`dhkd.run.diagnostics` whether each addition acts in a run
- :mod:`dhkd.run.predict`     scoring new images with a run (``dhkd predict``, :func:`dhkd.predict`)
- :mod:`dhkd.run.export`      a run as one ONNX file, image to map and score (``dhkd export``)
- :mod:`dhkd.run.fingerprint` what ties an export to the weights and settings it was made from
- :mod:`dhkd.run.onnx_scoring` scoring with an exported file in onnxruntime (``--engine onnxruntime``)
- :mod:`dhkd.run.background`  a periodic background task (progress of a training in another process)
"""
