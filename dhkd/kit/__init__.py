"""The kit: ``make reproduce`` and ``make ablation`` (:mod:`dhkd.kit.reproduce`, papermill over the
notebooks, per category and seed), and the results tables rebuilt from their JSON files
(:mod:`dhkd.kit.tables`). Only the command line imports this layer.
"""
