"""The appliance as a service: what runs under systemd and what an operator asks it.

Owns the configuration file (:mod:`~edge.service.config`), the streaming pipeline
(:mod:`edge.service.pipeline`), the state directory and its files
(:mod:`~edge.service.state`, :mod:`~edge.service.statefiles`), the status snapshot and
its three renderings (:mod:`~edge.service.snapshot`: ``status.json``, MQTT health,
:mod:`~edge.service.metrics`), ``crystal-edge status`` (:mod:`~edge.service.status`),
systemd notifications (:mod:`~edge.service.systemd`) and logging
(:mod:`~edge.service.logsetup`). Nothing is imported here, so a light command (``status``)
loads only what it uses.
"""
