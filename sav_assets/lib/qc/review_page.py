"""The review page of a batch: one self-contained HTML file a person opens to judge masklets.

``exports/review/<batch>/index.html`` shows every video of the batch with its filmstrip (the preview
strip of :mod:`sav_assets.lib.label.filmstrip`, masks coloured by id) and a row per masklet: QC
verdict and reasons, the current human verdict, and the review strip of a failing masklet. Videos with
failing masklets come first, and failing masklets first within a video. Images are embedded as
``data:`` URIs, so the file works copied anywhere (no server, nothing fetched).

Each masklet has *accept* / *reject* buttons: a click shows (and copies to the clipboard, where the
browser allows it) the ``sav-assets review ...`` command, and adds the verdict to the page's list;
*Download verdicts* saves that list as ``verdicts-<batch>.jsonl``, the format of
:mod:`sav_assets.lib.qc.reviews`: dropped under ``<root>/reviews/``, the next run records it.
"""

from __future__ import annotations

import base64
import html
import json

from sav_assets.lib.label.filmstrip import preview_path, review_path
from sav_assets.lib.store.lake import Lake

_SCRIPT = """
const verdicts = [];
function verdict(btn, v) {
  const r = JSON.parse(btn.closest('tr').dataset.key);
  const cmd = `sav-assets review ${v} ${r.video_id} ${r.masklet_type} ${r.masklet_id}`;
  btn.closest('tr').querySelector('code.cmd').textContent = cmd;
  btn.closest('tr').querySelector('.current').textContent = v + ' (not saved yet)';
  if (navigator.clipboard) { navigator.clipboard.writeText(cmd).catch(() => {}); }
  verdicts.push({...r, verdict: v, reviewed_at: new Date().toISOString()});
  document.getElementById('count').textContent = verdicts.length;
}
function download() {
  const text = verdicts.map(v => JSON.stringify(v)).join('\\n') + '\\n';
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], {type: 'application/x-ndjson'}));
  a.download = document.body.dataset.file;
  document.body.appendChild(a); a.click(); a.remove();
}
"""
_STYLE = ("body{font-family:sans-serif;margin:1em}img{max-width:100%}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 6px}tr.fail{background:#fee}section{margin-bottom:2em}")


def _img(lake: Lake, rel: str, alt: str) -> str:
    if not lake.exists(rel):
        return f"<p><em>no filmstrip ({html.escape(rel)})</em></p>"
    b64 = base64.b64encode(lake.get_bytes(rel)).decode()
    return f'<img class="strip" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _row(lake: Lake, batch_id: str, q: dict, current: str) -> str:
    key = {"video_id": q["video_id"], "masklet_type": q["masklet_type"], "masklet_id": int(q["masklet_id"])}
    strip = "" if q["passed"] else _img(lake, review_path(batch_id, *key.values()), "review strip")
    return (f'<tr class="{"pass" if q["passed"] else "fail"}" data-key="{html.escape(json.dumps(key))}">'
            f'<td>{html.escape(q["masklet_type"])}</td><td>{int(q["masklet_id"])}</td>'
            f'<td>{"passed" if q["passed"] else "FAILED"}</td><td>{html.escape(", ".join(q["reasons"] or []))}</td>'
            f'<td class="current">{html.escape(current)}</td>'
            '<td><button class="accept" onclick="verdict(this,\'accept\')">accept</button> '
            '<button class="reject" onclick="verdict(this,\'reject\')">reject</button> <code class="cmd"></code></td>'
            f'<td>{strip}</td></tr>')


def render_review_page(lake: Lake, batch_id: str, qc_rows: list[dict], verdicts: dict[tuple, str]) -> str:
    """The page's HTML (see the module docstring); ``verdicts``: the current human verdict per masklet."""
    by_video: dict[str, list[dict]] = {}
    for q in qc_rows:
        by_video.setdefault(q["video_id"], []).append(q)
    order = sorted(by_video, key=lambda v: (all(q["passed"] for q in by_video[v]), v))
    sections = []
    for vid in order:
        rows = sorted(by_video[vid], key=lambda q: (q["passed"], q["masklet_type"], q["masklet_id"]))
        body = "".join(_row(lake, batch_id, q, verdicts.get((vid, q["masklet_type"], q["masklet_id"]), "none"))
                       for q in rows)
        sections.append(f'<section id="{html.escape(vid)}"><h2>{html.escape(vid)}</h2>'
                        f'{_img(lake, preview_path(batch_id, vid), "filmstrip " + vid)}'
                        '<table><tr><th>type</th><th>id</th><th>QC</th><th>reasons</th><th>verdict</th>'
                        f'<th>review</th><th>strip</th></tr>{body}</table></section>')
    failing = sum(not q["passed"] for q in qc_rows)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>Review {html.escape(batch_id)}</title>'
            f'<style>{_STYLE}</style><script>{_SCRIPT}</script></head>'
            f'<body data-file="verdicts-{html.escape(batch_id)}.jsonl"><h1>Batch {html.escape(batch_id)}</h1>'
            f'<p>{len(qc_rows)} masklets, {failing} failing QC, in {len(order)} videos. Verdicts chosen here: '
            '<span id="count">0</span> <button id="download" onclick="download()">Download verdicts</button> '
            '(drop the file in &lt;lake root&gt;/reviews/; the next run reads it)</p>'
            + "".join(sections) + "</body></html>")


def write_review_page(lake: Lake, batch_id: str, qc_rows: list[dict], verdicts: dict[tuple, str]) -> str:
    """Write ``exports/review/<batch>/index.html``; returns its lake-relative path."""
    rel = f"exports/review/{batch_id}/index.html"
    lake.put_bytes(rel, render_review_page(lake, batch_id, qc_rows, verdicts).encode(), "text/html")
    return rel
