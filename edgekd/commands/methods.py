"""``edgekd methods``: the three things a recipe combines, with a line each and its paper.

A compact list (name, summary, short citation) that fits the terminal (80 columns in a pipe); ``--long``
one block per entry (formula, task, needs, params, full paper); ``--json`` the rows as they are.

losses (what is minimised: ``losses:``), methods (what changes the training loop: ``method.name``) and
how runs chain (``scheme.name``); the loss presets (``method.name`` naming a ready loss list) beside them.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Callable
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


TITLES = {
    "losses": "losses: what is minimised (recipe `losses:` list)",
    "methods": "methods: what changes the training loop (`method.name`)",
    "presets": "loss presets: a named `losses:` list (`method.name`)",
    "schemes": "schemes: how runs chain (`scheme.name`)",
}
MIN_WIDTH = 60  # narrower terminals get 60-column lines
YEAR = re.compile(r"\b(19|20)\d\d\b")


def _needs(r: dict[str, Any]) -> str:
    return ", ".join(k for k in ("teacher", "features") if r.get(k)) or "-"


def _params(r: dict[str, Any]) -> str:
    return ", ".join(r["params"]) or "-"


Field = Callable[[dict[str, Any]], str]
FIELDS: dict[str, dict[str, Field]] = {  # what ``--long`` shows of each entry, in order
    "losses": {"formula": lambda r: r["what"], "task": lambda r: "/".join(r["tasks"]), "needs": _needs,
               "params": _params, "paper": lambda r: r["paper"] or "-"},
    "methods": {"what": lambda r: r["what"], "params": _params},
    "presets": {"formula": lambda r: r["what"], "needs": _needs, "params": _params,
                "paper": lambda r: r["paper"] or "-"},
    "schemes": {"what": lambda r: r["what"]},
}  # fmt: skip


def short_citation(paper: str | None) -> str:
    """First author and year: ``"Zagoruyko & Komodakis 2017 (attention transfer)"`` -> ``"Zagoruyko 2017"``,
    ``"privileged sensors (Lopez-Paz et al. 2016, ...)"`` -> ``"Lopez-Paz 2016"``; no year: as it is."""
    text = paper or ""
    head, _, rest = text.partition(" (")
    cite = head if YEAR.search(head) else rest.rstrip(")").split(",")[0]
    year = YEAR.search(cite)
    if year is None:
        return text
    author = re.split(r"[ ,&]", cite.removeprefix("cf. "), maxsplit=1)[0]
    return f"{author} {year.group()}"


def _clip(text: str, n: int) -> str:
    """``text`` in at most ``n`` characters, cut at a word and marked ``...`` when too long."""
    if len(text) <= n:
        return text
    cut = text[: max(0, n - 3)]
    word = cut.rsplit(" ", 1)[0]
    return (word if len(word) > n // 2 else cut).rstrip(" ,;:") + "..."


NAME_COLUMN = 20  # at most this wide, so one long name does not narrow every summary


def compact_lines(rows: list[dict[str, Any]], width: int) -> list[str]:
    """One line per entry, at most ``width`` characters: name, summary (formulas unmarked), citation."""
    papers = [short_citation(r.get("paper")) for r in rows]
    name_w = min(max(len(r["name"]) for r in rows), NAME_COLUMN)  # a longer name takes from its summary
    paper_w = min(max(map(len, papers)), width // 3)
    what_w = max(10, width - 2 - name_w - 2 - (paper_w + 2 if paper_w else 0))
    out = []
    for r, paper in zip(rows, papers):
        room = max(10, what_w - max(0, len(r["name"]) - name_w))
        line = f"  {r['name']:<{name_w}}  {_clip(r['what'].replace('``', ''), room):<{room}}"
        if paper_w:
            line += f"  {_clip(paper, paper_w)}"
        out.append(_clip(line.rstrip(), width))
    return out


def long_lines(rows: list[dict[str, Any]], fields: dict[str, Field], width: int) -> list[str]:
    """One block per entry: its name, then each field wrapped under its label (no line over ``width``)."""
    label_w = max(map(len, fields)) + 2
    out = []
    for r in rows:
        out += ["", f"  {r['name']}"]
        for label, get in fields.items():
            first = f"    {label:<{label_w}}"
            out += textwrap.wrap(get(r), width, initial_indent=first, subsequent_indent=" " * len(first),
                                 break_on_hyphens=False) or [first.rstrip()]  # fmt: skip
    return out


@click.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
@click.option(
    "--long", "long_", is_flag=True, help="One block per entry: formula, task, needs, params, paper."
)
def command(as_json: bool, long_: bool) -> None:
    """List losses (`losses:`), methods (`method.name`), loss presets (`method.name`) and schemes (`scheme.name`)."""
    rows = registry_rows()
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
        return
    width = max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)
    for i, (key, title) in enumerate(TITLES.items()):
        body = long_lines(rows[key], FIELDS[key], width) if long_ else compact_lines(rows[key], width)
        click.echo("\n".join(([""] if i else []) + [_clip(title, width)] + body))
    if not long_:
        click.echo("\nformulas, tasks, needs and params: edgekd methods --long")
