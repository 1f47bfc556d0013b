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


def _methods(*args: str, columns: str = "80") -> list[str]:
    from click.testing import CliRunner

    from edgekd.cli import cli

    result = CliRunner().invoke(cli, ["methods", *args], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def _names() -> set[str]:
    from edgekd.commands.methods import registry_rows

    return {r["name"] for rows in registry_rows().values() for r in rows}


def test_methods_fits_80_columns_and_names_every_entry() -> None:
    lines = _methods()
    assert max(map(len, lines)) <= 80
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert listed == _names()  # every loss, method, preset and scheme, one line each
    ab = next(line for line in lines if line.split()[0] == "ab")
    assert ab.endswith("Heo 2019") and "Hinge on the teacher's ReLU pattern" in ab
    assert all(t in lines for t in ("losses: what is minimised (recipe `losses:` list)",
                                    "schemes: how runs chain (`scheme.name`)"))  # fmt: skip


def test_methods_long_shows_formulas_in_blocks_within_80_columns() -> None:
    from edgekd.commands.methods import registry_rows

    lines = _methods("--long")
    assert max(map(len, lines)) <= 80
    text = " ".join(" ".join(lines).split())  # a formula wrapped over lines reads back joined
    for rows in registry_rows().values():
        for r in rows:
            assert f"  {r['name']}" in lines and " ".join(r["what"].split()) in text
    at = lines.index("  at")
    assert lines[at + 1].startswith("    formula  Activation attention ``sum_j")
    assert "    paper    Zagoruyko & Komodakis 2017 (attention transfer)" in lines[at:]


def test_methods_follows_a_wide_terminal() -> None:
    assert max(map(len, _methods(columns="200"))) > 80  # summaries are clipped only when they must be


def test_short_citation() -> None:
    from edgekd.commands.methods import short_citation

    assert short_citation("Hinton, Vinyals & Dean 2015") == "Hinton 2015"
    assert short_citation("Huang et al., NeurIPS 2022 (DIST)") == "Huang 2022"
    assert short_citation("ReLU on/off patterns (cf. Heo et al. 2019)") == "Heo 2019"
    assert short_citation("privileged sensors (Lopez-Paz et al. 2016, applied)") == "Lopez-Paz 2016"
    assert short_citation("") == short_citation(None) == ""
