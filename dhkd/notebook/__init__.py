"""The notebooks' tools: figures (:mod:`dhkd.notebook.plots`) and interactive widgets
(:mod:`dhkd.notebook.widgets`: threshold explorer, failure browser, run comparison).

They draw what the layers below compute; nothing here computes a metric or trains.
"""
