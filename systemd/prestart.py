"""ExecStartPre of crystal-edge.service: build or refresh the TensorRT engine, if useful.

Run by systemd as ``venv/bin/python systemd/prestart.py /etc/crystal-edge/config.toml``
(after ``crystal-edge check-config``). It calls ``crystal-edge build-engine --config``
only when the configured backend can use TensorRT:

* ``[backend] name = "onnxruntime"``: nothing to build, exit 0;
* ``name = "auto"``: build when ``tensorrt`` is importable; a failed build is reported
  and the start goes on (the runtime falls back to ONNX Runtime), exit 0;
* ``name = "tensorrt"``: build; a failure stops the start (the runtime would fail too).

The engine lands in the service's cache (``<state dir>/engines``); an unchanged key is
reused in seconds, so this costs nothing on an ordinary restart.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: prestart.py CONFIG.toml", file=sys.stderr)
        return 2
    config = args[0]
    from edge.errors import UserError
    from edge.service.config import load_config

    try:
        cfg = load_config(config)
    except UserError as exc:
        print(f"prestart: error: {exc}", file=sys.stderr)
        return 2
    name = cfg.backend.name
    if name == "onnxruntime":
        print("prestart: backend onnxruntime: no TensorRT engine to build")
        return 0
    if name == "auto" and importlib.util.find_spec("tensorrt") is None:
        print("prestart: backend auto, TensorRT not installed: no engine to build "
              "(the runtime uses ONNX Runtime)")
        return 0
    from edge.cli import main as crystal_edge

    rc = crystal_edge(["build-engine", "--config", config])
    if rc != 0 and name == "auto":
        print(f"prestart: engine build failed (exit {rc}); backend auto goes on without "
              "TensorRT", file=sys.stderr)
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
