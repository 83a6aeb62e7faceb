"""Self-contained HTML pieces: the page shell with inline CSS and script, figures as PNG data URIs, tables."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2127;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:14px 24px}header a{color:#cfe0ff}
header h1{margin:0;font-size:1.35rem}header p{margin:4px 0 0;font-size:.9rem;opacity:.85}
main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px;margin:0 0 16px}
section h2{margin:0 0 8px;font-size:1.1rem}
.card{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:4px 16px;font-size:.9rem}
.card div span{color:#5b6573}
figure{margin:8px 0;display:inline-block;vertical-align:top}figure img{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#5b6573}
.note{color:#8a4b00;font-size:.9rem}
table.vbo-table{border-collapse:collapse;font-size:.85rem;margin-top:6px}
table.vbo-table th,table.vbo-table td{border:1px solid #dde1e6;padding:3px 8px;text-align:left}
table.vbo-table th{background:#eef1f5;cursor:pointer;user-select:none;white-space:nowrap}
table.vbo-table th[aria-sort=ascending]::after{content:" \\25B2"}
table.vbo-table th[aria-sort=descending]::after{content:" \\25BC"}
table.vbo-table td.num{text-align:right;font-variant-numeric:tabular-nums}
.table-filter{padding:4px 6px;width:280px;font-size:.85rem}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
"""

SCRIPT = """
(function(){
  function cellValue(row, index){
    var cell = row.cells[index];
    return cell ? (cell.getAttribute('data-value') || cell.textContent.trim()) : '';
  }
  function compare(a, b){
    var x = parseFloat(a), y = parseFloat(b);
    var numeric = a !== '' && b !== '' && !isNaN(x) && !isNaN(y) && isFinite(a) && isFinite(b);
    if (numeric) { return x - y; }
    return a.localeCompare(b, undefined, {numeric: true});
  }
  function sortBy(table, header, index){
    var ascending = header.getAttribute('aria-sort') !== 'ascending';
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(r1, r2){
      var c = compare(cellValue(r1, index), cellValue(r2, index));
      return ascending ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(h){ h.removeAttribute('aria-sort'); });
    header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  }
  function filterRows(table, text){
    var needle = text.toLowerCase();
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function(r){
      var keep = r.textContent.toLowerCase().indexOf(needle) !== -1;
      r.style.display = keep ? '' : 'none';
      if (keep) { shown += 1; }
    });
    var counter = document.getElementById(table.id + '-count');
    if (counter) { counter.textContent = shown + ' of ' + table.tBodies[0].rows.length + ' rows'; }
  }
  document.querySelectorAll('table.vbo-table').forEach(function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(header, index){
      header.addEventListener('click', function(){ sortBy(table, header, index); });
    });
    var input = document.querySelector('input[data-filter-for="' + table.id + '"]');
    if (input) { input.addEventListener('input', function(){ filterRows(table, input.value); }); }
  });
})();
"""


def escape(value) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, subtitle: str, sections: Iterable[str], nav: Mapping[str, str] | None = None) -> str:
    """A whole HTML document: header with ``title``, navigation links, the sections, inline style and script."""
    links = " · ".join(f'<a href="{escape(href)}">{escape(label)}</a>' for label, href in (nav or {}).items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{STYLE}</style></head>'
            f'<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p>'
            f'{f"<p>{links}</p>" if links else ""}</header>'
            f'<main>{"".join(sections)}</main><script>{SCRIPT}</script></body></html>\n')


def section(title: str, *parts: str, anchor: str | None = None) -> str:
    ident = f' id="section-{escape(anchor)}"' if anchor else ""  # tables use the bare names as ids
    return f'<section{ident}><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def figure(fig, caption: str, dpi: int = 90) -> str:
    """A matplotlib Figure as an inline PNG (data URI) with its natural size; the figure is closed."""
    import matplotlib.pyplot as plt  # deferred: vbo.plots chooses the backend before pyplot is first imported

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        width, height = image.size
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
            f'alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>')


def card(items: Mapping[str, object]) -> str:
    """Key–value metadata as a compact grid."""
    cells = "".join(f"<div><span>{escape(k)}</span>: {escape(text(v))}</div>" for k, v in items.items())
    return f'<div class="card">{cells}</div>'


def text(value) -> str:
    """A cell's display text: lists joined, floats to 4 significant digits, dates to the minute, missing empty."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(text(v) for v in value)
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return ""
    return str(value)


def table(frame: pd.DataFrame, ident: str, links: Mapping[str, Mapping[object, str]] | None = None,
          filterable: bool = True, index: bool = True) -> str:
    """A sortable (click a header) and filterable (type in the box) table.

    ``links`` maps a column name to ``{value: href}``: those cells become links.
    """
    frame = frame.reset_index() if index and frame.index.name is not None else frame
    links = links or {}
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    rows = []
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    for values in frame.itertuples(index=False):
        cells = []
        for column, value, is_number in zip(frame.columns, values, numeric):
            shown = escape(text(value))
            href = links.get(column, {}).get(value)
            if href:
                shown = f'<a href="{escape(href)}">{shown}</a>'
            attrs = ' class="num"' if is_number else ""
            if is_number and text(value):
                attrs += f' data-value="{escape(value)}"'
            cells.append(f"<td{attrs}>{shown}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    box = (f'<input class="table-filter" type="search" placeholder="filter rows" data-filter-for="{escape(ident)}" '
           f'aria-label="filter rows"> <span id="{escape(ident)}-count">{len(frame)} rows</span>'
           if filterable else "")
    return (f'{box}<table class="vbo-table" id="{escape(ident)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def write(path: str | Path, document: str) -> Path:
    """Write a page (UTF-8), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path
