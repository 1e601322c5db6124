"""The one table writer of every benchmark: markdown tables, ratio cells, the machine line, the report.

    table = Table(("latent side", "loop s", "fused s", "fused / loop"), "rrrr")
    print(table.add(64, f"{loop:.3f}", f"{fused:.3f}", ratio(fused, loop)), flush=True)  # as it comes
    publish("\n".join([f"# attention: {machine(threads)}", "", str(table)]) + "\n", "out.md")

Cells are written as given (``str()`` of each); the benchmarks format their own numbers, so a
table reads the same as the committed ``benchmarks/*.md`` results it reproduces.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Iterable, List, Optional, Union

import torch

_RULE = {"l": "---", "r": "---:"}


class Table:
    """A markdown table: ``columns`` titles, ``align`` one letter per column ("l": left, the
    markdown default, ``---``; "r": right, numbers, ``---:``), then rows added one by one."""

    def __init__(self, columns: Iterable[str], align: str):
        self.columns = list(columns)
        if len(align) != len(self.columns) or set(align) - set(_RULE):
            raise ValueError(f"Table: 'align' needs one of 'l' / 'r' per column ({len(self.columns)}), got {align!r}")
        self.align = align
        self.rows: List[str] = []

    @staticmethod
    def line(cells: Iterable[object]) -> str:
        """One markdown row: ``| a | b |``."""
        return "| " + " | ".join(str(c) for c in cells) + " |"

    def head(self) -> List[str]:
        """The title row and the alignment rule."""
        return [self.line(self.columns), "|" + "|".join(_RULE[a] for a in self.align) + "|"]

    def add(self, *cells: object) -> str:
        """Append a row (as many cells as columns); returns its line, for printing as it comes."""
        if len(cells) != len(self.columns):
            raise ValueError(f"Table.add: {len(self.columns)} cells expected, got {len(cells)}")
        self.rows.append(self.line(cells))
        return self.rows[-1]

    def lines(self) -> List[str]:
        return self.head() + self.rows

    def __str__(self) -> str:
        return "\n".join(self.lines())


def ratio(numerator: float, denominator: float, digits: int = 2) -> str:
    """``numerator / denominator`` as a cell, e.g. "1.42" ("-" when the denominator is 0)."""
    return f"{numerator / denominator:.{digits}f}" if denominator else "-"


def change(value: float, reference: float) -> str:
    """Relative change of ``value`` against ``reference`` as a cell, e.g. "+12.3 %"."""
    return f"{100 * (value / reference - 1):+.1f} %" if reference else "-"


def machine(threads: Optional[int] = None) -> str:
    """"<processor>, <n> CPUs, torch <version>[, <threads> threads]": what every report's title names."""
    text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    return text if threads is None else f"{text}, {threads} threads"


def publish(text: str, path: Union[str, Path, None] = None) -> None:
    """Print a report and, when ``path`` is given, write it there (folders made as needed)."""
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        print(f"written to {path}")
