"""`edgekd methods` (edgekd/commands/methods.py): the losses, presets, methods and schemes, with papers."""

import json

from edgekd.cli import main


def test_edgekd_methods_lists_losses_methods_and_schemes(run_cli):
    code, _ = run_cli(["methods", "--json"])
    assert code == 0


def test_methods_json_names_papers(capsys):
    main(["methods", "--json"])
    out = json.loads(capsys.readouterr().out)
    losses = {r["name"]: r for r in out["losses"]}
    assert losses["kd"]["paper"].startswith("Hinton") and losses["hint"]["features"]
    assert {"dml", "netaug"} <= {m["name"] for m in out["methods"]}
    assert {"kd", "supervised", "compose"} <= {p["name"] for p in out["presets"]}
    assert {"single", "born-again"} <= {s["name"] for s in out["schemes"]}
