"""The doors of ``crystal-train``: one module per command (``HELP``, ``add_arguments``, ``run``).

Listed explicitly in :mod:`trainer.cli`: ``synth`` (generated data), ``check-data``,
``weights`` (class weights), ``train``, ``export``, ``evaluate`` (through the
appliance's own chain).
"""
