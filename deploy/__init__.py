"""``make deploy``: roll a release of crystal-psd out to Jetsons over SSH, with rollback.

Stdlib only (runs on the operator's workstation with any Python >= 3.10): ``python -m
deploy --hosts "jetson-01 jetson-02" ...``. See ``python -m deploy --help`` and
``docs/deploy.md``.

Modules: :mod:`deploy.release` (the release tree and wheel, built locally),
:mod:`deploy.remote` (SSH/rsync), :mod:`deploy.remote_scripts` (the scripts run on the
target), :mod:`deploy.host` (one host's deployment), :mod:`deploy.cli` (arguments, hosts
in parallel, summary table).
"""
