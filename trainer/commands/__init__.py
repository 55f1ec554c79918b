"""The doors of ``crystal-train``: one module per command (``HELP``, ``add_arguments``, ``run``).

Listed explicitly in :mod:`trainer.cli`: ``synth`` (generated data), ``check-data``,
``weights`` (class weights), ``train``, ``evaluate`` (through the appliance's own chain),
``export``, ``adapt`` (a plant's input normalisation), ``blend`` (a model and its
fine-tune, weight by weight), ``resample`` (a dataset at another pixel size),
``labels-to-coco`` and ``coco-to-labels``.
"""
