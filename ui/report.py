"""The downloadable report: one self-contained HTML file of the current analysis (text, settings,
the views as interactive plotly plots, explanations) that opens offline. No gradio here.

plotly.js is inlined once (about 4.6 MB); each figure is its JSON plus one `Plotly.newPlot` call
whose toolbar saves SVG as well as PNG. A Content-Security-Policy meta tag forbids every network
request (`default-src 'none'`), so the file cannot reach the network even by accident.

Everything a visitor typed (the text, settings, token labels inside the figures) is shown as text:
HTML-escaped in the page, and `<`, `>`, `&` written as \\u escapes inside the figures' JSON so
that no string can close the <script> element it sits in. Figures are expected to be built by
ui/attention_plots, which already escapes labels that plotly would read as markup.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ui.views import export_folder

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
PLOT_CONFIG = {
    "displaylogo": False, "responsive": True, "showLink": False, "showEditInChartStudio": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
pre.text { white-space: pre-wrap; background: #f6f6f6; padding: 0.8em; border-radius: 6px; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
.plot { min-height: 480px; } footer { color: #777; font-size: 0.9em; margin-top: 3em; }
"""
# A second camera in each plot's toolbar: plotly's own saves PNG, this one SVG.
SVG_BUTTON = """
function reportConfig() {
  var config = JSON.parse(document.getElementById('report-plot-config').textContent);
  config.modeBarButtonsToAdd = [{name: 'Download plot as SVG', icon: Plotly.Icons.camera,
    click: function (gd) { Plotly.downloadImage(gd, {format: 'svg', filename: 'attention'}); }}];
  return config;
}
"""


@dataclass
class ReportSection:
    """One view in the report: a title, explanation paragraphs, and a plotly figure and/or a table."""

    title: str
    explanation: Sequence[str] = ()
    figure: Any = None  # a plotly Figure (anything with .to_plotly_json())
    table: Sequence[Mapping[str, Any]] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` (each written as a \\u escape)."""
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(title: str, text: str, settings: Mapping[str, Any], sections: Sequence[ReportSection],
                 created: dt.datetime | None = None) -> str:
    """The report's HTML (see the module docstring)."""
    created = created or dt.datetime.now(dt.timezone.utc)
    esc = html.escape
    settings_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in settings.items())
    parts = []
    for index, section in enumerate(sections):
        paragraphs = "".join(f"<p>{esc(str(p))}</p>" for p in section.explanation)
        plot = ""
        if section.figure is not None:
            figure = section.figure.to_plotly_json()
            data = script_json({"data": figure.get("data", []), "layout": figure.get("layout", {})})
            plot = (f'<div class="plot" id="plot-{index}"></div>\n<script>(function () {{ var f = {data}; '
                    f"Plotly.newPlot('plot-{index}', f.data, f.layout, reportConfig()); }})();</script>")
        parts.append(f"<section><h2>{esc(section.title)}</h2>{paragraphs}{plot}{_table(section.table)}</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<title>{esc(title)}</title><style>{STYLE}</style>\n"
        f"<script>{plotly_js()}</script>\n"
        f'<script type="application/json" id="report-plot-config">{script_json(PLOT_CONFIG)}</script>\n'
        f"<script>{SVG_BUTTON}</script>\n</head><body>\n"
        f"<h1>{esc(title)}</h1>\n<h2>Text</h2><pre class=\"text\">{esc(text)}</pre>\n"
        f"<h2>Settings</h2><table>{settings_rows}</table>\n" + "\n".join(parts) +
        f"\n<footer>BioGPT Studio report, made {esc(created.strftime('%Y-%m-%d %H:%M UTC'))}. "
        "It opens without a network: plotly.js is inside this file. Each plot's toolbar saves PNG (camera) "
        "and SVG (second camera).</footer>\n</body></html>\n"
    )


def write_report(html_text: str, folder: str | None = None) -> str:
    """Save a report among the app's exports (a bounded folder: the oldest exports are removed)."""
    path = Path(folder or export_folder()) / "attention-report.html"
    path.write_text(html_text, encoding="utf-8")
    return str(path)
