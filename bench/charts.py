"""The run's charts, PNG files beside the JSON: throughput beside the peers, latency distribution.

* throughput.png: one horizontal bar chart per section that measures rates with peers
  (publish, deliver, brokers), every events/s or emails/s figure of the run, coloured by system;
* latency_cdf.png: the share of emails accepted within a latency (log scale), ours beside
  Dramatiq and FastStream at the same rate, and its tail (the share still waiting, log scale),
  where p99 and p99.9 can be read.

The data preparation is kept apart from the drawing so that it can be tested without a chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.results import Section

THROUGHPUT_SECTIONS = ("publish", "deliver", "brokers")
THROUGHPUT_FILE = "throughput.png"
LATENCY_FILE = "latency_cdf.png"
COLOURS = {
    "ours": "#1f77b4",
    "dramatiq": "#d62728",
    "faststream": "#2ca02c",
    "celery": "#9467bd",
    "pika": "#7f7f7f",
    "ideal": "#bcbd22",
}
_OURS_PREFIXES = ("worker", "relay")
LATENCY_SERIES = {
    "ours": "ours (committed → accepted)",
    "dramatiq": "Dramatiq (send → accepted)",
    "faststream": "FastStream (publish → accepted)",
    "light": "ours at the light rate",
}


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    system: str
    """A key of COLOURS."""


def system_of(figure_key: str) -> str:
    """Which system a figure measures: the first word of its key that names one (the brokers
    section's keys start with the broker's name), else the first word."""
    words = figure_key.split("_")
    for word in words:
        if word in _OURS_PREFIXES:
            return "ours"
        if word in COLOURS:
            return word
    return words[0]


def throughput_bars(section: Section, unit: str | None = None) -> list[Bar]:
    """The section's rate figures (a unit per second, or only `unit`) that have a value, in
    the run's order."""
    return [
        Bar(figure.label, figure.value, system_of(figure.key))
        for figure in section.figures
        if figure.unit.endswith("/s") and figure.value is not None and unit in (None, figure.unit)
    ]


def throughput_panels(section: Section) -> dict[str, list[Bar]]:
    """One panel of bars per rate unit of the section, titled with the section's name (and
    the unit, where it has two: the brokers section's events/s would dwarf its emails/s)."""
    units = list(dict.fromkeys(f.unit for f in section.figures if f.unit.endswith("/s")))
    panels = {
        section.name if len(units) == 1 else f"{section.name}, {unit}": throughput_bars(
            section, unit
        )
        for unit in units
    }
    return {title: bars for title, bars in panels.items() if bars}


def cdf_points(values: list[float]) -> tuple[list[float], list[float]]:
    """Sorted values and, for each, the share of values at or below it (a step per value)."""
    ordered = sorted(values)
    count = len(ordered)
    return ordered, [(rank + 1) / count for rank in range(count)]


def tail_points(values: list[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the share above each (1 - CDF), the last one left out: it is 0, which
    a log scale cannot show."""
    ordered, shares = cdf_points(values)
    return ordered[:-1], [1.0 - share for share in shares[:-1]]


def write_charts(sections: dict[str, Section], directory: Path, title: str) -> list[Path]:
    """Draw the charts the run has data for into `directory`; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with_rates: dict[str, list[Bar]] = {}
    for name in THROUGHPUT_SECTIONS:
        section = sections.get(name)
        if section is not None and not section.error:
            with_rates.update(throughput_panels(section))
    if with_rates:
        written.append(_draw_throughput(with_rates, directory / THROUGHPUT_FILE, title))
    latency = sections.get("latency")
    if latency is not None and not latency.error and latency.samples:
        written.append(_draw_latency(latency, directory / LATENCY_FILE, title))
    return written


def _draw_throughput(bars_by_section: dict[str, list[Bar]], path: Path, title: str) -> Path:
    # The object API, not pyplot: no global figure state, no display backend needed.
    from matplotlib.figure import Figure

    heights = [len(bars) for bars in bars_by_section.values()]
    figure = Figure(figsize=(10, 1.2 + 0.38 * sum(heights)), layout="constrained")
    axes = figure.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, bars) in zip(axes, bars_by_section.items(), strict=True):
        positions = range(len(bars))
        ax.barh(
            positions,
            [bar.value for bar in bars],
            color=[COLOURS.get(bar.system, "#17becf") for bar in bars],
        )
        ax.set_yticks(list(positions), [bar.label for bar in bars], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_xlabel("per second (longer is faster)", fontsize=8)
        for position, bar in zip(positions, bars, strict=True):
            ax.annotate(
                f" {bar.value:,.0f}",
                (bar.value, position),
                va="center",
                fontsize=7,
            )
    figure.suptitle(f"throughput, {title}", fontsize=10)
    figure.savefig(path, dpi=110)
    return path


def _draw_latency(section: Section, path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    rate = section.parameters.get("rate_asked")
    light = section.parameters.get("light_rate_asked")
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    whole, tail = figure.subplots(1, 2)
    for name, label in LATENCY_SERIES.items():
        values = section.samples.get(name)
        if not values:
            continue
        shown = f"{label}, {light if name == 'light' else rate:g}/s"
        style = {
            "color": COLOURS.get(name, COLOURS["ours"]),
            "linestyle": ":" if name == "light" else "-",
            "label": shown,
        }
        whole.step(*cdf_points(values), where="post", **style)
        tail.step(*tail_points(values), where="post", **style)
    whole.set_xscale("log")
    whole.set_xlabel("latency, ms (log scale)")
    whole.set_ylabel("share of emails accepted within")
    whole.legend(fontsize=8, loc="lower right")
    tail.set_xscale("log")
    tail.set_yscale("log")
    tail.set_xlabel("latency, ms (log scale)")
    tail.set_ylabel("share still waiting (log scale)")
    for share, name in ((0.01, "p99"), (0.001, "p99.9")):
        tail.axhline(share, color="#999999", linewidth=0.7, linestyle="--")
        tail.annotate(name, (1.0, share), xycoords=("axes fraction", "data"), fontsize=7)
    repeats = section.parameters.get("repeats")
    figure.suptitle(f"latency, the runs of each series pooled ({repeats}), {title}", fontsize=10)
    figure.savefig(path, dpi=110)
    return path
