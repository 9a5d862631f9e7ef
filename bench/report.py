"""Showing a run: the rich table on the terminal, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.results import Figure, Section, Target


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("ms", "MiB") or abs(value) < 100:
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _spread(figure: Figure) -> str:
    """Lowest and highest over repeated runs, for a figure that is their median."""
    if figure.spread is None:
        return ""
    low, high = figure.spread
    return f"{_number(low, figure.unit)} to {_number(high, figure.unit)}"


def figures_table(sections: dict[str, Section]) -> Table:
    table = Table(title="rabbit-welcome benchmark", show_lines=False)
    table.add_column("section")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("min to max", justify="right")
    table.add_column("unit")
    table.add_column("ratio", justify="right")
    table.add_column("ratio to")
    for name, section in sections.items():
        if section.error:
            table.add_row(name, f"[red]failed: {section.error}[/red]", "", "", "", "", "")
            continue
        for figure in section.figures:
            table.add_row(
                name,
                figure.label,
                _number(figure.value, figure.unit),
                _spread(figure),
                figure.unit,
                _ratio(figure.ratio),
                figure.baseline or "",
            )
    return table


def targets_table(targets: list[Target]) -> Table:
    table = Table(title="targets")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("met")
    for target in targets:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "?"}[target.met]
        shown = (
            _ratio(target.measured) if target.versus is not None else _number(target.measured, "ms")
        )
        table.add_row(target.description, shown, met)
    return table


def print_report(
    console: Console, sections: dict[str, Section], targets: list[Target], meta: dict[str, Any]
) -> None:
    console.print(figures_table(sections))
    console.print(targets_table(targets))
    console.print(
        f"{meta.get('cpus')} CPUs ({meta.get('cpu_model')}), {meta.get('memory_gib')} GiB, "
        f"RabbitMQ {meta.get('rabbitmq')}, Python {meta.get('python')}; load average "
        f"{meta.get('load_average_at_start')} at start, {meta.get('load_average_at_end')} at end"
    )


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    temporary.replace(path)


def markdown(sections: dict[str, Section], targets: list[Target]) -> str:
    """The same two tables in Markdown, for docs/PERFORMANCE.md."""
    lines = [
        "| section | figure | value | min to max | unit | ratio | ratio to |",
        "| --- | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for name, section in sections.items():
        if section.error:
            lines.append(f"| {name} | failed: {section.error} | | | | | |")
            continue
        for figure in section.figures:
            lines.append(
                f"| {name} | {figure.label} | {_number(figure.value, figure.unit)} | "
                f"{_spread(figure)} | {figure.unit} | {_ratio(figure.ratio)} | "
                f"{figure.baseline or ''} |"
            )
    lines += ["", "| target | measured | met |", "| --- | ---: | --- |"]
    for target in targets:
        shown = (
            _ratio(target.measured) if target.versus is not None else _number(target.measured, "ms")
        )
        met = {True: "yes", False: "**no**", None: "?"}[target.met]
        lines.append(f"| {target.description} | {shown} | {met} |")
    return "\n".join(lines) + "\n"
