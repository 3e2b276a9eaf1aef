"""Figures that ``cnnbench analyze`` and ``cnnbench landscape`` already wrote, linked from report.md.

The report does not compute them (they need the weights and minutes); it mentions the ones it finds in
the report's folder, the folders it was given and the run folders it read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

FIGURES = {
    "analysis.png": "layer responses and gradient norms (`cnnbench analyze`)",
    "landscape.png": "loss landscape (`cnnbench landscape`)",
}


def existing_figures(folders: Iterable[Path]) -> list[Path]:
    """The diagnostic PNGs directly inside ``folders`` (each folder once, in the order given)."""
    seen: set[Path] = set()
    found = []
    for folder in folders:
        folder = Path(folder)
        key = folder.resolve()
        if key in seen or not folder.is_dir():
            continue
        seen.add(key)
        found += [folder / name for name in FIGURES if (folder / name).is_file()]
    return found


def diagnostics_markdown(folders: Iterable[Path], out: Path) -> str:
    """A "Diagnostics" section for report.md (empty when no figure exists); links relative to ``out``."""
    figures = existing_figures(folders)
    if not figures:
        return ""
    lines = ["", "## Diagnostics", ""]
    for figure in figures:
        link = Path(os.path.relpath(figure.resolve(), Path(out).resolve())).as_posix()
        where = figure.parent.name if figure.parent.resolve() != Path(out).resolve() else "these runs"
        lines.append(f"- {FIGURES[figure.name].capitalize()}, {where}: [{link}]({link})")
    return "\n".join(lines) + "\n"
