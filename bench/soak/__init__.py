"""Helpers of ``bench/soak_faults.py``: the appliance under test (:mod:`.appliance`), the
faults it is given (:mod:`.faults`) and what is observed of it (:mod:`.observe`).

Everything here drives the appliance through its public behaviour only: the
``crystal-edge run`` command line, its configuration file, the watched folder, the state
directory on disk, signals and MQTT. No module imports the service's internals, so the
soak keeps working while those change.
"""
