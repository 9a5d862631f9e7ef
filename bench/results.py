"""What a benchmark run produces: figures, their ratios to a baseline, and the targets.

Every figure names the figure of the same run it is compared with (its baseline), so the
ratio means the same on any machine even when the absolute numbers do not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Comparison = Literal["at_least", "above", "below", "at_most"]


@dataclass
class Figure:
    key: str
    label: str
    value: float | None
    unit: str
    baseline: str | None = None
    """Key of the figure in the same section this one is divided by."""
    ratio: float | None = None
    what: str = ""
    """What exactly was measured, in one sentence (for the JSON reader and the docs)."""
    spread: list[float] | None = None
    """[lowest, highest] over repeated runs, when `value` is their median."""


@dataclass
class Target:
    description: str
    section: str
    figure: str
    versus: str | None
    """The figure (same section) the ratio is taken against; None compares the value itself."""
    comparison: Comparison
    threshold: float
    measured: float | None = None
    met: bool | None = None


@dataclass
class Section:
    name: str
    figures: list[Figure] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=dict)
    """Raw measurements the charts draw (latencies in ms, by series); not written to the JSON."""

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def add_all(self, figures: list[Figure]) -> None:
        self.figures.extend(figures)

    def figure(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)


def compute_ratios(section: Section) -> None:
    """Fill in each figure's ratio to its baseline, where both values exist."""
    for figure in section.figures:
        base = section.figure(figure.baseline) if figure.baseline else None
        if base is None or figure.value is None or not base.value:
            figure.ratio = None
        else:
            figure.ratio = figure.value / base.value


def evaluate(target: Target, sections: dict[str, Section]) -> Target:
    """Measure `target` against the run's figures; `met` stays None when a figure is missing."""
    section = sections.get(target.section)
    figure = section.figure(target.figure) if section else None
    if figure is None or figure.value is None:
        return target
    if target.versus is None:
        measured: float | None = figure.value
    else:
        base = section.figure(target.versus) if section else None
        measured = figure.value / base.value if base and base.value else None
    target.measured = measured
    if measured is not None:
        if target.comparison == "at_least":
            target.met = measured >= target.threshold
        elif target.comparison == "above":
            target.met = measured > target.threshold
        elif target.comparison == "at_most":
            target.met = measured <= target.threshold
        else:
            target.met = measured < target.threshold
    return target


def document(
    meta: dict[str, Any], sections: dict[str, Section], targets: list[Target]
) -> dict[str, Any]:
    """The JSON document written to bench/results/latest.json."""
    return {
        "meta": meta,
        "sections": {
            name: {
                "figures": {f.key: asdict(f) for f in section.figures},
                "parameters": section.parameters,
                "seconds": round(section.seconds, 2),
                "error": section.error,
            }
            for name, section in sections.items()
        },
        "targets": [asdict(target) for target in targets],
    }
