"""``edgekd methods``: every registered loss, method and scheme, with a line each and its paper."""

from __future__ import annotations

import inspect

import click


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else ""


@click.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
def command(as_json: bool) -> None:
    """List losses (for `losses:`), methods (`method.name`) and schemes (`scheme.name`)."""
    from edgekd.distill.losses import LOSSES
    from edgekd.distill.methods import METHODS
    from edgekd.distill.methods.base import method_params
    from edgekd.distill.schemes import SCHEMES

    losses = [
        {"name": n, "tasks": list(i.tasks), "teacher": i.needs_teacher, "features": i.features,
         "params": i.params(), "what": i.summary, "paper": i.paper}
        for n, i in ((n, LOSSES.get(n)) for n in LOSSES.names())
    ]  # fmt: skip
    methods = [{"name": n, "params": method_params(METHODS.get(n)), "what": _first_line(METHODS.get(n))}
               for n in METHODS.names()]  # fmt: skip
    schemes = [{"name": n, "what": _first_line(SCHEMES.get(n))} for n in SCHEMES.names()]
    if as_json:
        import json

        click.echo(json.dumps({"losses": losses, "methods": methods, "schemes": schemes}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="losses (recipe `losses:` list)")
    for col in ("name", "task", "needs", "params", "formula", "paper"):
        t.add_column(col)
    for r in losses:
        needs = ", ".join(k for k in ("teacher", "features") if r[k]) or "-"
        t.add_row(
            r["name"], "/".join(r["tasks"]), needs, ", ".join(r["params"]) or "-", r["what"], r["paper"]
        )
    console.print(t)
    for title, rows in (("methods (`method.name`)", methods), ("schemes (`scheme.name`)", schemes)):
        t = Table(title=title)
        t.add_column("name")
        t.add_column("what")
        if rows is methods:
            t.add_column("params")
        for r in rows:
            t.add_row(r["name"], r["what"], *([", ".join(r["params"]) or "-"] if rows is methods else []))
        console.print(t)
