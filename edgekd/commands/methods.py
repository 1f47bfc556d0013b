"""``edgekd methods``: the three things a recipe combines, with a line each and its paper.

losses (what is minimised: ``losses:``), methods (what changes the training loop: ``method.name``) and
how runs chain (``scheme.name``); the loss presets (``method.name`` naming a ready loss list) beside them.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import click

from edgekd.registry import summary_line


def registry_rows() -> dict[str, list[dict[str, Any]]]:
    """Every registered loss, method, loss preset and scheme, as plain rows."""
    from edgekd.distill.losses import LOSSES, PRESETS
    from edgekd.distill.losses.presets import COMPOSE
    from edgekd.distill.methods import METHODS
    from edgekd.distill.methods.base import method_params
    from edgekd.distill.schemes import SCHEMES

    losses = [
        {"name": n, "tasks": list(i.tasks), "teacher": i.needs_teacher, "features": i.features,
         "params": i.params(), "what": i.summary, "paper": i.paper}
        for n, i in ((n, LOSSES.get(n)) for n in LOSSES.names())
    ]  # fmt: skip
    methods = [{"name": n, "params": method_params(METHODS.get(n)), "what": summary_line(METHODS.get(n))}
               for n in METHODS.names()]  # fmt: skip
    presets = [{"name": n, "teacher": p.needs_teacher, "params": p.params(), "what": p.summary, "paper": p.paper}
               for n, p in ((n, PRESETS.get(n)) for n in PRESETS.names())]  # fmt: skip
    presets.append({"name": COMPOSE, "teacher": False, "params": [], "paper": "",
                    "what": "the recipe's `losses:` list as it stands (the default when `losses:` is given)"})  # fmt: skip
    schemes = [{"name": n, "what": summary_line(SCHEMES.get(n))} for n in SCHEMES.names()]
    return {"losses": losses, "methods": methods, "presets": presets, "schemes": schemes}


def _table(title: str, rows: list[dict[str, Any]], columns: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(get(r)) for get in columns.values()))
    return t


def _needs(r: dict[str, Any]) -> str:
    return ", ".join(k for k in ("teacher", "features") if r.get(k)) or "-"


def _params(r: dict[str, Any]) -> str:
    return ", ".join(r["params"]) or "-"


@click.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
def command(as_json: bool) -> None:
    """List losses (`losses:`), methods (`method.name`), loss presets (`method.name`) and schemes (`scheme.name`)."""
    rows = registry_rows()
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console

    console = Console()
    name, what, paper = itemgetter("name"), itemgetter("what"), itemgetter("paper")
    console.print(_table("losses: what is minimised (recipe `losses:` list)", rows["losses"],
                         {"name": name, "task": lambda r: "/".join(r["tasks"]), "needs": _needs, "params": _params,
                          "formula": what, "paper": paper}))  # fmt: skip
    console.print(_table("methods: what changes the training loop (`method.name`)", rows["methods"],
                         {"name": name, "what": what, "params": _params}))  # fmt: skip
    console.print(_table("loss presets: a named `losses:` list (`method.name`)", rows["presets"],
                         {"name": name, "needs": _needs, "params": _params, "formula": what,
                          "paper": paper}))  # fmt: skip
    console.print(
        _table("schemes: how runs chain (`scheme.name`)", rows["schemes"], {"name": name, "what": what})
    )
