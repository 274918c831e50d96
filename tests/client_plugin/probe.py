"""A cloud's own openstacksdk ``vendor_hook``, to show it still runs under OSC
beside the scope's: it writes a marker file named by ``$PROBE_FILE``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def vendor_hook(conn: Any) -> None:
    Path(os.environ["PROBE_FILE"]).write_text(conn.config.name)
