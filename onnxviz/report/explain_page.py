"""The report's sections on where the network looks (the `explain` entries that render writes,
see explain/pages.py): class activation maps and factorized parts on an image's page, the joint
parts on the run's page. Plain HTML with pictures: everything shows without JavaScript; with it, a
part's channel opens in the page's viewer."""
from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

SHOWN = 220  # px, the width a picture is shown at


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _src(path: str) -> str:
    return _esc(quote(path))


def _channels(part: dict[str, Any], layer: dict[str, Any], digits: int, run: bool,
              shown: dict[int, set | None]) -> str:
    """A part's channels, each a link to the page's view of it where the page shows it: `shown` maps the
    layers the page draws to the channels it stored (None: any, the run page's compare view says which
    images hold one)."""
    links = []
    atlas = part.get("atlas") or [None] * len(part["channels"])
    stored = shown.get(layer["index"], set())
    for c, atlas_link in zip(part["channels"], atlas):
        if layer["index"] not in shown:  # a layer render factorized but does not draw (--layers): no view
            link = str(c)
        elif stored is not None and c not in stored:  # drawn, but not this channel (--max-channels)
            link = (f"<span title='channel {c} is not stored for this image: render with --max-channels or "
                    f"--channels to see it'>{c}</span>")
        elif run:  # the run page's compare view shows a channel in every image
            link = f"<a href='#compare={layer['index']}:{c}'>{c}</a>"
        else:
            link = (f"<a href='#layer-{str(layer['index']).zfill(digits)}' data-open='{layer['index']}:{c}' "
                    f"title='open channel {c} of {_esc(layer['layer'])}'>{c}</a>")
        if atlas_link:
            link += f"<a class=atlas href='{_esc(atlas_link)}' title='what channel {c} responds to'>&#8599;</a>"
        links.append(link)
    return ", ".join(links)


def _legend(layer: dict[str, Any], digits: int, shown: dict[int, set | None], run: bool = False) -> str:
    items = "".join(
        f"<li><i class=swatch style='background:{_esc(p['colour'])}'></i>part {j + 1} "
        f"<small>({p['share'] * 100:.0f}% of the layer)</small>: channels {_channels(p, layer, digits, run, shown)}</li>"
        for j, p in enumerate(layer["parts"]))
    notes = [f"error {layer['error'] * 100:.0f}% (relative, Frobenius)"]
    if layer.get("clipped"):
        notes.append(f"{layer['clipped'] * 100:.1f}% of the energy was negative and set to 0")
    if layer.get("note"):
        notes.append(_esc(layer["note"]))
    return f"<div><ol class=parts-legend>{items}</ol><p class=meta>{'; '.join(notes)}</p></div>"


def cam_section(cam: dict[str, Any]) -> str:
    if "maps" not in cam:
        return f"<p class=meta>{_esc(cam.get('note', ''))}</p>"
    figures = "".join(
        f"<figure><img src='{_src(m['file'])}' width={SHOWN} alt='Grad-CAM of {_esc(m['label'])}'>"
        f"<figcaption><b>{_esc(m['label'])}</b>"
        + (f" {m['score'] * 100:.1f}%" if m.get("score") is not None else "")
        + f" <small>peak {m['max']:.3g}</small></figcaption></figure>" for m in cam["maps"])
    h, w = cam["shape"]
    note = f"<p class=meta>{_esc(cam['note'])}</p>" if cam.get("note") else ""
    return (f"<h3>Where it looks for its top classes <small>{_esc(cam['method'])} at {_esc(cam['layer'])} "
            f"({h}&times;{w})</small></h3><div class=cams>{figures}</div>"
            f"<p class=cam-scale><span>0</span><img src='{_src(cam['scale'])}' width=200 height=10 alt=''>"
            f"<span>each map's peak</span> <small>(the colour fades into the photo where the map is low)</small></p>{note}")


def image_section(summary: dict[str, Any], digits: int) -> str:
    """The image page's section, or '' when render was asked for neither."""
    explain = summary.get("explain")
    if not explain:
        return ""
    parts = ""
    shown = {entry["index"]: set(entry.get("channels") or []) for entry in summary.get("layers", [])}
    for layer in explain.get("parts", []):
        parts += (f"<div class=parts><figure><img src='{_src(layer['file'])}' width={SHOWN} "
                  f"alt='parts of {_esc(layer['layer'])}'><figcaption>{_esc(layer['layer'])} "
                  f"<small>{'&times;'.join(map(str, layer['shape']))}</small></figcaption></figure>"
                  f"{_legend(layer, digits, shown)}</div>")
    if parts:
        parts = ("<h3>What layers see as parts <small>non-negative factorization of positions &times; "
                 "channels; click a channel to open it (a plain number: not stored for this image)</small></h3>" + parts)
    cam = cam_section(explain["cam"]) if "cam" in explain else ""
    return f"<section class=explain id=explain><h2>Where the network looks</h2>{cam}{parts}</section>"


def run_section(run: dict[str, Any]) -> str:
    """The run page's joint factorization: one layer's parts over every image, the same colours."""
    joint = run.get("explain")
    if not joint:
        return ""
    figures = "".join(
        f"<a href='{_src(image['folder'])}/index.html'><img src='{_src(image['file'])}' width=160 alt=''></a>"
        for image in joint["images"])
    return (f"<section class=explain id=explain><h2>Parts of {_esc(joint['layer'])} over the last render's images "
            f"<small>one factorization for all of them: a colour is the same part everywhere</small></h2>"
            f"<div class=joint>{figures}</div>{_legend(joint, 3, {l['index']: None for l in run.get('layers', [])}, run=True)}"
            f"</section>")
