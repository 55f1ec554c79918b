"""``crystal-edge``: the appliance's command line.

Commands are listed explicitly here (name -> module); see :mod:`edge.clikit`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from edge.clikit import dispatch

COMMANDS: dict[str, str] = {
    "analyze": "edge.commands.analyze",
    "run": "edge.commands.run",
    "check-config": "edge.commands.check_config",
    "config-schema": "edge.commands.config_schema",
    "payload-schema": "edge.commands.payload_schema",
    "status": "edge.commands.status",
    "trend": "edge.commands.trend",
    "build-engine": "edge.commands.build_engine",
    "calibrate": "edge.commands.calibrate",
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("crystal-edge", "Crystal size distribution on the edge.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
