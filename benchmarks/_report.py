"""What the newer benchmark scripts share: the machine's CPU name and writing a table and its rows."""
from __future__ import annotations

import json
import os


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``"?"`` where there is none)."""
    if not os.path.exists("/proc/cpuinfo"):
        return "?"
    with open("/proc/cpuinfo") as fh:
        return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")


def write_report(text: str, rows: list[dict], out: str | None, results: str | None) -> None:
    """Print ``text``; write it to ``out`` and ``rows`` as JSON lines to ``results`` where given."""
    print(text)
    for path, body in ((out, text + "\n"), (results, "".join(json.dumps(r) + "\n" for r in rows))):
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as fh:
                fh.write(body)
