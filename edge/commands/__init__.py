"""The doors of ``crystal-edge``: one module per command (``HELP``, ``add_arguments``, ``run``).

Listed explicitly in :mod:`edge.cli`. ``analyze`` (with ``analyze_inputs``,
``analyze_masks`` and ``analyze_images``) measures files, ``run`` starts the service,
``status`` reads it, ``check-config``, ``config-schema``, ``payload-schema`` and
``build-engine`` prepare it.
Every door measures through :mod:`edge.vision` and :mod:`edge.psd`.
"""
