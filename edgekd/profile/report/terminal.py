"""The rich terminal summary."""

from __future__ import annotations

from typing import Any

from edgekd.profile.report.tables import FIT_HEADERS, SUMMARY_HEADERS, fit_rows, short_label, summary_rows
from edgekd.safetext import markup

# --------------------------------------------------------------------------------------------------
# terminal


def print_summary(report: dict[str, Any], console: Any = None) -> None:
    """The summary table (and fit table) with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="edgekd profile", header_style="bold")
    for key, head in SUMMARY_HEADERS.items():
        if key in ("artifact", "runtime"):
            table.add_column(head, justify="left", no_wrap=True, overflow="ellipsis", ratio=2)
        else:
            table.add_column(head, justify="right", ratio=1)
    errors = []
    for r in summary_rows(report):  # every cell is text from files (names, errors): escaped for rich
        r["artifact"] = short_label(r["artifact"])
        r = {k: markup(v) for k, v in r.items()}
        if r["error"]:
            errors.append(f"{r['artifact']} ({r['runtime']}): {r['error']}")
            table.add_row(r["artifact"], r["runtime"], "[red]error[/red]", "", "", r["flash"], "")
        else:
            table.add_row(*(r[k] for k in SUMMARY_HEADERS))
    console.print(table)
    for e in errors:
        console.print(f"[red]error[/red] {e}", highlight=False, soft_wrap=True)
    if report.get("device_measured"):  # edgekd bench results beside the estimates
        from edgekd.profile.report.bench_file import device_table

        console.print(device_table(report["device_measured"]))
    frows = fit_rows(report)
    if frows:
        ft = Table(title="fit per target", header_style="bold")
        for h in FIT_HEADERS:
            ft.add_column(h)
        for row in frows:
            row = [markup(c) for c in row[:-1]] + [
                "[green]PASS[/green]" if row[-1] == "PASS" else "[red]FAIL[/red]"
            ]
            ft.add_row(*row)
        console.print(ft)
