"""One static HTML page of a pipeline run: every stage's metrics and pictures under reports/.

The page links the pictures where the stages wrote them (relative paths, nothing copied), so it
is small, and opens from the file system or any static file server without a tracking server.
The files it reads, ``preprocess.json`` and each training stage's ``metrics.json``, are deps of
the visualize stage in dvc.yaml: a stage that writes new figures redraws the page.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from petvision.core.atomic import write_text
from petvision.core.tasks import Task
from petvision.util.nested import flatten

PICTURES = (".png", ".jpg", ".jpeg", ".svg", ".gif")
# Where each part of the run is reported, in pipeline order: (title, folder under reports/).
SECTIONS = (
    ("Preprocessing", "."),
    ("Segmentation training", Task.segmentation),
    ("Classification training", Task.classification),
    ("What the convnets learned", "visualize"),
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; font-size: 90%; }
figure { display: inline-block; margin: .4em; vertical-align: top; }
figure img { max-width: 900px; border: 1px solid #eee; }
figcaption { font-size: 80%; color: #555; }
"""


def _metrics_table(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(data, Mapping):
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in flatten(data).items()
        if not isinstance(v, list)
    )
    return f"<h3>{html.escape(path.name)}</h3><table>{rows}</table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _pictures(folder: Path, page_dir: Path, recursive: bool) -> str:
    found = sorted(
        p
        for p in (folder.rglob("*") if recursive else folder.glob("*"))
        if p.suffix.lower() in PICTURES and not p.name.startswith(".")
    )
    figures = []
    for picture in found:
        link = Path(os.path.relpath(picture, page_dir)).as_posix()
        caption = Path(os.path.relpath(picture, folder)).as_posix()
        figures.append(
            f'<figure><a href="{html.escape(link)}"><img src="{html.escape(link)}" loading="lazy" '
            f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    return "\n".join(figures)


def write_report(
    reports: Path,
    page: Path,
    title: str = "petvision pipeline run",
    where: Mapping[str, Path] | None = None,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Write ``page`` (an HTML file inside ``reports``) describing ``reports/``. ``where`` maps a
    section's folder name to the folder actually holding it now (the visualize stage writes the
    page while its own folder is still a temporary sibling, to be renamed into place); ``notes``
    maps a section's folder name to HTML put first in that section (its own tables)."""
    reports, page = Path(reports), Path(page)
    where = dict(where or {})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Written {datetime.now():%Y-%m-%d %H:%M} from {html.escape(str(reports))}.</p>"
    ]
    for heading, sub in SECTIONS:
        folder = Path(where.get(sub, reports / sub))
        if not folder.is_dir():
            continue
        metrics = (
            [folder / "preprocess.json"] if sub == "." else sorted(folder.glob("metrics.json"))
        )
        tables = "".join(_metrics_table(p) for p in metrics if p.is_file())
        pictures = (
            "" if sub == "." else _pictures(folder, page.parent, recursive=sub == "visualize")
        )
        note = (notes or {}).get(sub, "")
        if tables or pictures or note:
            parts.append(f"<h2>{html.escape(heading)}</h2>{note}{tables}{pictures}")
    parts.append("</body></html>")
    write_text(page, "\n".join(parts))
    return page
