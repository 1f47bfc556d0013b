"""The one provenance header of every JSON record edgekd writes (``export.json``, ``bench.json``,
``report.json``): which record and schema version, which edgekd wrote it, and when.

``{"schema": "edgekd-<kind>/<version>", "edgekd": "<package version>", "created": "<UTC ISO time>"}``
leads the record. Readers go through :func:`schema_of`, which also knows the older styles
(``"edgekd_export": 2``, ``"edgekd_bench": 1``), so files written before keep reading.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

_SCHEMA = re.compile(r"edgekd-([a-z0-9-]+)/(\d+)")


def provenance(kind: str, version: int) -> dict[str, Any]:
    """The header fields for a ``kind`` record (``export``, ``bench``, ``report``) of ``version``."""
    from edgekd import __version__

    return {
        "schema": f"edgekd-{kind}/{version}",
        "edgekd": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def schema_of(record: Any) -> tuple[str, int] | None:
    """``(kind, version)`` of a record edgekd wrote (this header or an older ``edgekd_<kind>: N``
    key), else None."""
    if not isinstance(record, dict):
        return None
    m = _SCHEMA.fullmatch(str(record.get("schema", "")))
    if m:
        return m.group(1), int(m.group(2))
    for key, value in record.items():
        if key.startswith("edgekd_") and isinstance(value, int) and not isinstance(value, bool):
            return key.removeprefix("edgekd_"), value
    return None
