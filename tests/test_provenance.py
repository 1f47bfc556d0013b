"""edgekd.provenance: the one header of the JSON records edgekd writes; older keys still read."""

from __future__ import annotations

from edgekd.provenance import provenance, schema_of


def test_the_header_and_the_older_keys_read_the_same_way():
    head = provenance("export", 3)
    assert head["schema"] == "edgekd-export/3" and set(head) == {"schema", "edgekd", "created"}
    assert schema_of(head) == ("export", 3)
    assert schema_of({"edgekd_export": 2, "name": "x"}) == ("export", 2)
    assert schema_of({"edgekd_bench": 1}) == ("bench", 1)
    assert schema_of({"schema": "edgekd-report/1"}) == ("report", 1)
    assert schema_of({"name": "x"}) is None and schema_of([1]) is None
