"""``edgekd targets``: list the deployment target profiles and their limits."""

from __future__ import annotations

import click


def _kb(n: int | None) -> str:
    if n is None:
        return "no limit"
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:g} MB"
    return f"{n / 1024:g} KB"


@click.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def command(as_json: bool) -> None:
    """List target profiles (targets/*.yaml, $EDGEKD_TARGETS_DIR) with CPU, clock, RAM, flash, runtime."""
    from edgekd.targets import list_targets

    targets = list_targets(strict=True)  # a broken board file is named, not hidden
    if as_json:
        import json

        click.echo(json.dumps([t.as_dict() for t in targets], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgekd targets")
    for col in ("name", "kind", "cpu", "clock", "RAM", "flash", "runtime", "quant", "cycles/MAC"):
        table.add_column(
            col,
            justify="right" if col in ("clock", "RAM", "flash", "cycles/MAC") else "left",
            no_wrap=col in ("name", "kind", "RAM", "flash", "clock"),
        )
    from edgekd.safetext import markup

    for t in targets:  # board files are the user's: every text cell is escaped for rich
        cells = (
            t.name,
            t.kind,
            t.cpu,
            f"{t.clock_mhz:g} MHz" if t.clock_mhz else "-",
            _kb(t.ram_bytes),
            _kb(t.flash_bytes),
            ", ".join(t.runtimes),
            t.quantization,
            f"{t.cycles_per_mac:g}" if t.cycles_per_mac else "-",
        )
        table.add_row(*(markup(c) for c in cells))
    Console().print(table)
