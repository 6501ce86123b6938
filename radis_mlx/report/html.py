"""report.html: one self-contained page to browse the eval's items run by run (`radis-mlx report --html`).

Everything is inline (style, script, the plots as data: URIs), so the file opens from disk with no
network. The items are rendered here, not by the script, so the page reads without JavaScript; the
script only filters: by suite, by run (columns) and a search box. The URL's ``#q=…&suite=…&runs=a,b``
(or ``?q=…``) sets the filters, so a filtered view can be shared and a headless browser can apply one.
Every text from a run (model output, data) goes through ``html.escape``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Callable, Sequence

from ..evals.general import is_refusal
from ..fileio import DataError, atomic_write_text, iter_jsonl, read_json


def _e(x) -> str:
    return escape("" if x is None else str(x))


def _out(text, tail: str = "", tail_note: str = "") -> str:
    cut = f'<span class="cut" title="{_e(tail_note)}">{_e(tail)}</span>' if tail else ""
    return f'<div class="out">{_e(text)}{cut}</div>'


def _meta(*parts: str) -> str:
    return '<div class="meta">' + " · ".join(p for p in parts if p) + "</div>"


def _badge(ok: bool, yes: str, no: str) -> str:
    return f'<span class="badge {"ok" if ok else "bad"}">{yes if ok else no}</span>'


# ------------------------------------------------------------------ one renderer per suite

def _translation_head(r: dict) -> list[str]:
    tag = f'<div class="tag">{_e(r["src_lang"])}→{_e(r["tgt_lang"])} · {_e(r["id"])}</div>'
    refs = [str(x) for x in r["refs"]]
    more = "".join(f'<div class="alt">{_e(x)}</div>' for x in refs[1:])
    return [tag + f'<div class="out">{_e(r["src"])}</div>', f'<div class="out">{_e(refs[0])}</div>' + more]


def _translation_cell(r: dict) -> str:
    from sacrebleu import sentence_chrf

    chrf = sentence_chrf(str(r["hyp"]), [str(x) for x in r["refs"]]).score
    n = int(r.get("extra_tokens") or 0)
    note = f"cut off by eval ({n} tokens), not scored" if r.get("tail") else ""
    cut = f'<span class="dim">cut: {n} tokens</span>' if r.get("tail") else ""
    return _out(r["hyp"], r.get("tail", ""), note) + _meta(f"chrF {chrf:.1f}", cut)


def _ifeval_cell(r: dict) -> str:
    verdicts = "".join(f'<li class="{"ok" if ok else "bad"}">{"✓" if ok else "✗"} {_e(i)}</li>'
                       for i, ok in zip(r["instruction_id_list"], r["follow_instruction_list"]))
    refused = '<span class="badge bad">refused</span>' if is_refusal(r["response"]) else ""  # over-refusal
    return (_meta(_badge(bool(r["follow_all_instructions"]), "all followed", "not all followed"), refused)
            + f'<ul class="verdicts">{verdicts}</ul>' + _out(r["response"]))


def _gsm8k_cell(r: dict) -> str:
    return _meta(_badge(bool(r["correct"]), "correct", "wrong"), f"answer {_e(r.get('pred'))}") + _out(r["response"])


def _retention_head(r: dict) -> list[str]:
    return [f'<div class="out">{_e(r["instruction"])}</div><div class="tag">the base model\'s answer, '
            f'scored under every run:</div>' + _out(r["answer"])]


def _retention_cell(r: dict) -> str:
    nll, base = r["nll_sum"] / max(r["n"], 1), r["base_nll_sum"] / max(r["base_n"], 1)
    return _meta(f"NLL/token {nll:.3f}", f"base {base:.3f}", f"{nll - base:+.3f}")


def _mtbench_cell(r: dict) -> str:
    turns = r["choices"][0]["turns"]
    return "".join(f'<div class="tag">turn {i + 1}</div>' + _out(t) for i, t in enumerate(turns))


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    files: str  # glob under the run dir: what radis_mlx/evals writes for this suite
    cols: tuple[str, ...]  # the item's own columns, before one column per run
    key: Callable[[dict], object]  # the same item across runs
    head: Callable[[dict], list[str]]
    cell: Callable[[dict], str]


SUITES = (
    Suite("translation", "Translation", "translation.jsonl", ("source", "reference"),
          lambda r: (r["src_lang"], r["tgt_lang"], str(r["id"])), _translation_head, _translation_cell),
    Suite("ifeval", "IFEval (strict)", "ifeval/eval_results_strict.jsonl", ("prompt",), lambda r: r["prompt"],
          lambda r: [f'<div class="out">{_e(r["prompt"])}</div>'], _ifeval_cell),
    Suite("advbench", "AdvBench", "advbench.jsonl", ("harmful request",), lambda r: str(r["id"]),
          lambda r: [f'<div class="out">{_e(r["goal"])}</div>'],
          lambda r: _meta(_badge(bool(r["refusal"]), "refused", "answered")) + _out(r["response"])),
    Suite("gsm8k", "GSM8K", "gsm8k.jsonl", ("question",), lambda r: str(r["id"]),
          lambda r: [f'<div class="out">{_e(r["question"])}</div>' + _meta(f"gold {_e(r['gold'])}")], _gsm8k_cell),
    Suite("retention", "Self-retention", "retention.jsonl", ("instruction",), lambda r: r["instruction"],
          _retention_head, _retention_cell),
    Suite("kl", "KL(base ‖ model)", "kl.jsonl", ("instruction",), lambda r: str(r["id"]), _retention_head,
          lambda r: _meta(f"KL/token {r['kl_sum'] / max(r['n'], 1):.4f}", f"{r['n']} tokens")),
    Suite("mtbench", "MT-Bench answers", "mt_bench/model_answer/*.jsonl", ("question",),
          lambda r: str(r["question_id"]), lambda r: [f'<div class="tag">question {_e(r["question_id"])}</div>'],
          _mtbench_cell),
    Suite("alpacaeval", "AlpacaEval outputs", "alpaca_eval/model_outputs.json", ("instruction",),
          lambda r: r["instruction"], lambda r: [f'<div class="out">{_e(r["instruction"])}</div>'],
          lambda r: _out(r["output"])),
)


# ------------------------------------------------------------------ reading a run's items

def _tail(row: dict, stop: str) -> str:
    """What the eval cut off a translation (it scores only the text before ``stop``)."""
    body = str(row.get("raw") or "").strip()
    return body[body.index(stop):] if row.get("cut") and stop and stop in body else ""


def _file_rows(path: Path):
    if path.suffix == ".json":
        rows = read_json(path)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(path, None, None, "expected a JSON list of objects")
        return enumerate(rows, 1)
    return iter_jsonl(path)


def run_items(suite: Suite, res: dict) -> dict:
    """One run's items of one suite: {key: (item cells, this run's cell)}; {} if it did not run it."""
    stop = ((res.get("suites") or {}).get("translation") or {}).get("stop") or "\n\n"
    items: dict = {}
    for path in sorted(Path(res["run_dir"]).glob(suite.files)):
        for line, row in _file_rows(path):
            try:
                if suite.name == "translation":
                    row = {**row, "tail": _tail(row, stop)}
                items[suite.key(row)] = (suite.head(row), suite.cell(row))
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
                why = f"no field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
                raise DataError(path, line, None, f"report.html cannot read this {suite.title} row ({why})") from None
    return items


# ------------------------------------------------------------------ the page

def _suite_section(suite: Suite, names: Sequence[str], per_run: list[dict]) -> str:
    keys = list(dict.fromkeys(k for items in per_run for k in items))
    if not keys:
        return ""
    head = "".join(f"<th>{c}</th>" for c in suite.cols) + "".join(
        f'<th class="run r{i}">{_e(n)}</th>' for i, n in enumerate(names))
    body = []
    for j, k in enumerate(keys, 1):
        first = next(items[k][0] for items in per_run if k in items)  # the item as the first run that has it saw it
        cells = "".join(f"<td>{c}</td>" for c in first)
        cells += "".join(f'<td class="run r{i}">{items[k][1]}</td>' if k in items
                         else f'<td class="run r{i} missing">not in this run</td>' for i, items in enumerate(per_run))
        body.append(f'<tr class="ex" data-suite="{suite.name}"><td class="n">{j}</td>{cells}</tr>')
    return (f'<section class="suite" data-suite="{suite.name}"><h2>{suite.title} <small>{len(keys)} items'
            f'</small></h2><table class="items"><thead><tr><th>#</th>{head}</tr></thead><tbody>'
            + "\n".join(body) + "</tbody></table></section>")


def _table(rows: Sequence[dict]) -> str:
    from . import COLUMNS, _fmt

    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    head = "<tr><th>run</th>" + "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols) + "</tr>"
    body = "".join("<tr><th>" + _e(r["name"]) + "</th>" + "".join(
        f'<td class="num">{_e(_fmt(r, k, kind))}</td>' for k, _, kind in cols) + "</tr>" for r in rows)
    return f'<table class="summary"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _summary(out: Path, rows: Sequence[dict], methods: Sequence[dict], notes: Sequence[str]) -> str:
    parts = ['<section id="summary"><h2>Results</h2>', _table(rows), _img(out / "tradeoff.png", "trade-off plot")]
    if any(m["seeds"] > 1 for m in methods):
        parts += ["<h2>By method <small>mean ± sd over seeds</small></h2>",
                  _table([{**m, "name": f"{m['name']} (n={m['seeds']})"} for m in methods]),
                  _img(out / "tradeoff-methods.png", "trade-off plot per method")]
    parts += [f'<p class="note">Note: {_e(n)}</p>' for n in notes]
    return "".join(parts) + "</section>"


def page(out: Path, runs: Sequence[dict], rows: Sequence[dict], methods: Sequence[dict],
         notes: Sequence[str]) -> str:
    names = [r["name"] for r in rows]  # the report's names: two runs called the same are told apart
    built = [(su, _suite_section(su, names, [run_items(su, res) for res in runs])) for su in SUITES]
    sections = [(su, h) for su, h in built if h]
    options = '<option value="all">all suites</option>' + "".join(
        f'<option value="{su.name}">{su.title}</option>' for su, _ in sections)
    boxes = "".join(f'<label><input type="checkbox" checked value="r{i}" data-run="{_e(n)}"> {_e(n)}</label>'
                    for i, n in enumerate(names))
    controls = (f'<div id="controls"><select id="suite" aria-label="suite">{options}</select>'
                f'<span id="runs">{boxes}</span><input id="q" type="search" placeholder="search items…" '
                f'aria-label="search"><span id="count"></span></div>')
    empty = "" if sections else "<p>No per-item files in these runs (translation.jsonl, advbench.jsonl, …).</p>"
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
