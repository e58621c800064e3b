"""The per-image report: `summary.json` for programs and `index.html` for people.

Both are made from the same summary dict that `render` builds, so they never disagree.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .files import write_text

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#1f2430;color:#eee;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;color:#bbb}
main{padding:16px 24px;max-width:1400px}
.top{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0} figcaption{color:#555;font-size:12px}
table{border-collapse:collapse} td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #ddd}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:10px;background:#2878c8;vertical-align:middle}
section.layer{background:#fff;border:1px solid #ddd;border-radius:6px;margin:16px 0;padding:10px 14px}
section.layer h2{font-size:16px;margin:0 0 4px} .meta{color:#555;margin-bottom:8px}
section.layer img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}
nav{columns:4 180px;font-size:13px;margin:8px 0 0} nav a{color:#2060a0;text-decoration:none;display:block}
.warn{color:#a33}
figure.filters img{width:220px;image-rendering:pixelated;border:1px solid #ccc}
figure.filters figcaption{max-width:220px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _shape(shape: list) -> str:
    return " x ".join("N" if d is None else str(d) for d in shape)


def render_html(summary: dict[str, Any]) -> str:
    """The report page of one image."""
    preds = summary.get("predictions") or []
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{_esc(p['label'])}</td><td class=num>{p['score'] * 100:.1f}%</td>"
        f"<td><span class=bar style='width:{max(1, round(p['score'] * 160))}px'></span></td></tr>"
        for i, p in enumerate(preds)
    )
    pred_html = (f"<table><tr><th>#</th><th>class</th><th class=num>score</th><th></th></tr>{rows}</table>"
                 if preds else "<p>This model has no class output.</p>")
    filters = summary.get("filters")
    filters_html = (
        f"<figure class=filters><img src='{_esc(filters['file'])}' alt='first-layer filters'>"
        f"<figcaption>{_esc(filters['layer'])}: {filters['count']} learned filters of the first convolution "
        f"({_esc(filters['kernel'])})</figcaption></figure>" if filters else ""
    )
    nav = "".join(f"<a href='#layer-{layer['index']}'>{layer['index']}. {_esc(layer['name'])}</a>"
                  for layer in summary["layers"])
    sections = []
    for layer in summary["layers"]:
        st = layer["stats"]
        dead = st.get("dead_channels")
        dead_html = (f", <span class=warn>{dead} dead channels</span>" if dead else ", no dead channels") if dead is not None else ""
        sections.append(
            f"<section class=layer id='layer-{layer['index']}'><h2>{layer['index']}. {_esc(layer['name'])} "
            f"<small>({_esc(layer['op'])})</small></h2>"
            f"<div class=meta>shape {_esc(_shape(layer['shape']))} &middot; channels shown {layer['channels_shown']} of "
            f"{layer['channels_total']} &middot; mean activation {st['mean']:.4g} &middot; zeros {st['zero_fraction'] * 100:.1f}%"
            f"{dead_html} &middot; range {st['min']:.4g} .. {st['max']:.4g}"
            + (f" &middot; <a href='{_esc(layer['atlas'])}'>what its channels respond to</a>" if layer.get("atlas") else "")
            + "</div>"
            f"<img src='{_esc(layer['file'])}' loading=lazy alt='{_esc(layer['name'])} feature maps'></section>"
        )
    timing = summary.get("timings_ms", {})
    timing_text = ", ".join(f"{k} {v:.0f} ms" for k, v in timing.items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{_esc(summary['image_name'])} - onnxviz</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>{_esc(summary['image_name'])} through {_esc(summary['source'])}</h1>"
        f"<p>{_esc(summary['model'])} &middot; input {summary['input'][0]}x{summary['input'][1]} ({_esc(summary['resize'])}) "
        f"&middot; ran on {_esc(summary['provider'])} &middot; {timing_text}"
        + (f" &middot; <a style='color:#9cf' href='{_esc(summary['atlas']['page'])}'>channel atlas</a>"
           if summary.get("atlas") else "")
        + "</p></header><main>"
        f"<div class=top><figure><img src='{_esc(summary['original'])}' alt='input image'>"
        f"<figcaption>the image as the model saw it</figcaption></figure>"
        f"<div><h2>Top predictions</h2>{pred_html}</div>{filters_html}</div>"
        f"<h2>{len(summary['layers'])} layers</h2><nav>{nav}</nav>{''.join(sections)}"
        f"<p><small>onnxviz {_esc(summary['onnxviz_version'])}; the same facts are in summary.json</small></p>"
        "</main></body></html>"
    )


def write_report(folder: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write `summary.json` and `index.html` into `folder` (atomically, each)."""
    folder = Path(folder)
    json_path = write_text(folder / "summary.json", json.dumps(summary, indent=2))
    html_path = write_text(folder / "index.html", render_html(summary))
    return json_path, html_path
