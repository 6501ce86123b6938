"""report.html: one self-contained page to browse the eval's items run by run (`radis-mlx report --html`).

Everything is inline (style, script, the plots as data: URIs), so the file opens from disk with no
network. The items are rendered here, not by the script, so the page reads without JavaScript; the
script only filters: by suite, by run (columns) and a search box. The URL's ``#q=…&suite=…&runs=a,b``
(or ``?q=…``) sets the filters, so a filtered view can be shared and a headless browser can apply one.
Every text from a run (model output, data) goes through ``html.escape`` (results.esc).

A section per registered suite that declares how its items show (evals/suites.py, ``Html``), in the
registry's order: its renderers live with the suite; this page only lays them out.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Sequence

from ..evals import suites as registry
from ..fileio import DataError, atomic_write_text
from ..results import columns, esc, fmt, item_rows, shown


def run_items(suite, res: dict) -> dict:
    """One run's items of one suite: {key: (item cells, this run's cell)}; {} if it did not run it."""
    summary = (res.get("suites") or {}).get(suite.name) or {}
    items: dict = {}
    for path, line, row in item_rows(res["run_dir"], suite.items):
        try:
            row = suite.html.prepare(row, summary)
            items[suite.html.key(row)] = (suite.html.head(row), suite.html.cell(row))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            why = f"no field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise DataError(path, line, None, f"report.html cannot read this {suite.html.title} row ({why})") from None
    return items


# ------------------------------------------------------------------ the page

def _suite_section(suite, names: Sequence[str], per_run: list[dict]) -> str:
    keys = list(dict.fromkeys(k for items in per_run for k in items))
    if not keys:
        return ""
    head = "".join(f"<th>{c}</th>" for c in suite.html.cols) + "".join(
        f'<th class="run r{i}">{esc(n)}</th>' for i, n in enumerate(names))
    body = []
    for j, k in enumerate(keys, 1):
        first = next(items[k][0] for items in per_run if k in items)  # the item as the first run that has it saw it
        cells = "".join(f"<td>{c}</td>" for c in first)
        cells += "".join(f'<td class="run r{i}">{items[k][1]}</td>' if k in items
                         else f'<td class="run r{i} missing">not in this run</td>' for i, items in enumerate(per_run))
        body.append(f'<tr class="ex" data-suite="{suite.name}"><td class="n">{j}</td>{cells}</tr>')
    return (f'<section class="suite" data-suite="{suite.name}"><h2>{suite.html.title} <small>{len(keys)} items'
            f'</small></h2><table class="items"><thead><tr><th>#</th>{head}</tr></thead><tbody>'
            + "\n".join(body) + "</tbody></table></section>")


def _table(rows: Sequence[dict]) -> str:
    cols = shown(rows, columns(registry.registered()))
    head = "<tr><th>run</th>" + "".join(f"<th>{esc(c.label)}</th>" for c in cols) + "</tr>"
    body = "".join("<tr><th>" + esc(r["name"]) + "</th>" + "".join(
        f'<td class="num">{esc(fmt(r, c))}</td>' for c in cols) + "</tr>" for r in rows)
    return f'<table class="summary"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _summary(out: Path, rows: Sequence[dict], methods: Sequence[dict], notes: Sequence[str]) -> str:
    parts = ['<section id="summary"><h2>Results</h2>', _table(rows), _img(out / "tradeoff.png", "trade-off plot")]
    if any(m["seeds"] > 1 for m in methods):
        parts += ["<h2>By method <small>mean ± sd over seeds</small></h2>",
                  _table([{**m, "name": f"{m['name']} (n={m['seeds']})"} for m in methods]),
                  _img(out / "tradeoff-methods.png", "trade-off plot per method")]
    parts += [f'<p class="note">Note: {esc(n)}</p>' for n in notes]
    return "".join(parts) + "</section>"


def page(out: Path, runs: Sequence[dict], rows: Sequence[dict], methods: Sequence[dict],
         notes: Sequence[str]) -> str:
    names = [r["name"] for r in rows]  # the report's names: two runs called the same are told apart
    shows = [su for su in registry.registered() if su.html]
    built = [(su, _suite_section(su, names, [run_items(su, res) for res in runs])) for su in shows]
    sections = [(su, h) for su, h in built if h]
    options = '<option value="all">all suites</option>' + "".join(
        f'<option value="{su.name}">{su.html.title}</option>' for su, _ in sections)
    boxes = "".join(f'<label><input type="checkbox" checked value="r{i}" data-run="{esc(n)}"> {esc(n)}</label>'
                    for i, n in enumerate(names))
    controls = (f'<div id="controls"><select id="suite" aria-label="suite">{options}</select>'
                f'<span id="runs">{boxes}</span><input id="q" type="search" placeholder="search items…" '
                f'aria-label="search"><span id="count"></span></div>')
    empty = "" if sections else f"<p>No per-item files in these runs ({', '.join(su.items for su in shows)}).</p>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>RaDis eval report</title>"
            f"<style>{CSS}</style><style id=\"runstyle\"></style></head><body><h1>RaDis eval report</h1>"
            + controls + _summary(out, rows, methods, notes) + empty + "\n".join(h for _, h in sections)
            + '<p id="none" hidden>No item matches these filters.</p>'
            + f"<script>{SCRIPT}</script></body></html>\n")


def write(out, runs: Sequence[dict], rows: Sequence[dict], methods: Sequence[dict], notes: Sequence[str]) -> Path:
    """report.html in ``out``, beside the plots it inlines (write them first)."""
    path = Path(out) / "report.html"
    atomic_write_text(path, page(Path(out), runs, rows, methods, notes))
    return path


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1em 2em;color:#222}
h1{font-size:1.4em;margin:.6em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}small{color:#777;font-weight:normal}
#controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:2;
display:flex;gap:1em;align-items:center;flex-wrap:wrap}#q{flex:1;min-width:12em;padding:.3em}
#runs label{margin-right:.6em;white-space:nowrap}#count{color:#555}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:.3em .5em;vertical-align:top;text-align:left}
table.summary td.num{text-align:right;white-space:nowrap}table.items{width:100%;table-layout:fixed}
table.items th.run,table.items td.run{background:#fafcff}td.n,th:first-child{width:2.5em}
.out{white-space:pre-wrap;overflow-wrap:anywhere;max-height:18em;overflow:auto}
.cut{color:#aaa;background:#f3f3f3}.dim,.tag,.alt{color:#888}.tag{font-size:.85em}
.meta{font-size:.85em;color:#555;margin:.2em 0}.missing{color:#aaa;font-style:italic}
.badge{border-radius:3px;padding:0 .4em;font-size:.9em}.badge.ok{background:#dff3df}.badge.bad{background:#f8dcdc}
ul.verdicts{margin:.2em 0;padding-left:1.2em;font-size:.85em}li.ok{color:#2a7a2a}li.bad{color:#b22}
img{max-width:100%;display:block;margin:.6em 0}.note{color:#8a5a00}
"""

# Filters run here in the page; the URL's hash (or query) sets them, and the hash follows the filters.
SCRIPT = r"""
(function () {
  const q = document.getElementById('q'), suite = document.getElementById('suite');
  const count = document.getElementById('count'), runStyle = document.getElementById('runstyle');
  const boxes = Array.from(document.querySelectorAll('#runs input'));
  const rows = Array.from(document.querySelectorAll('tr.ex'));
  function readUrl() {
    const P = new URLSearchParams((location.hash || location.search).replace(/^[#?]/, ''));
    q.value = P.get('q') || '';
    const s = P.get('suite') || 'all';
    suite.value = Array.from(suite.options).some(o => o.value === s) ? s : 'all';
    const keep = P.has('runs') ? P.get('runs').split(',') : null;
    boxes.forEach(b => { b.checked = !keep || keep.includes(b.dataset.run); });
  }
  const text = new WeakMap();
  function cellText(td) { if (!text.has(td)) text.set(td, td.textContent.toLowerCase()); return text.get(td); }
  function apply(save) {
    const terms = q.value.toLowerCase().split(/\s+/).filter(Boolean), s = suite.value;
    const off = new Set(boxes.filter(b => !b.checked).map(b => b.value));
    runStyle.textContent = Array.from(off).map(c => '.' + c + '{display:none}').join('');
    let shown = 0;
    for (const tr of rows) {
      const cells = Array.from(tr.cells).filter(td => !Array.from(off).some(c => td.classList.contains(c)));
      const ok = (s === 'all' || tr.dataset.suite === s)
        && terms.every(t => cells.some(td => cellText(td).includes(t)));
      tr.hidden = !ok; shown += ok;
    }
    for (const sec of document.querySelectorAll('section.suite')) {
      sec.hidden = !sec.querySelector('tr.ex:not([hidden])');
    }
    count.textContent = shown + ' of ' + rows.length + ' items';
    document.getElementById('none').hidden = shown > 0 || !rows.length;
    if (save) {
      const h = new URLSearchParams();
      if (q.value) h.set('q', q.value);
      if (s !== 'all') h.set('suite', s);
      if (off.size) h.set('runs', boxes.filter(b => b.checked).map(b => b.dataset.run).join(','));
      try { history.replaceState(null, '', '#' + h); } catch (e) { /* some browsers refuse it on file: pages */ }
    }
  }
  q.addEventListener('input', () => apply(true));
  suite.addEventListener('change', () => apply(true));
  boxes.forEach(b => b.addEventListener('change', () => apply(true)));
  window.addEventListener('hashchange', () => { readUrl(); apply(false); });
  readUrl();
  apply(false);
})();
"""
