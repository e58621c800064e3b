"use strict";
const A = window.ATLAS, N = A.top, T = A.tile, R = A.sheet_rows;
const $ = s => document.querySelector(s);
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
let overlay = A.overlay, order = "index";  // made with --overlay: shown until unticked
function tile(layer, c, r, scale, useOverlay) {
  const sheets = useOverlay && layer.overlays.length ? layer.overlays : layer.sheets;
  const k = Math.floor(c / R), rowsIn = Math.min(R, layer.channels - k * R), s = T * scale;
  return `<div class=t style="width:${s}px;height:${s}px;background-image:url('${esc(sheets[k])}');` +
    `background-size:${N * s}px ${rowsIn * s}px;background-position:-${r * s}px -${(c % R) * s}px"></div>`;
}
function fieldText(L) {
  const f = L.field;
  // every box is the whole input when even the last position's box starts before it and the first's ends after it
  const all = [0, 1].every(a => f.start[a] + (L.shape[a + 1] - 1) * f.jump[a] <= 0 && f.start[a] + f.size[a] >= A.input[a]);
  const whole = all ? ", so every crop is the whole input" + (A.overlay ? " (the overlay shows where the channel fired)" : "") : "";
  return f.exact ? `receptive field ${f.size[0]}x${f.size[1]} px${whole}, one map step = ${f.jump[0]} px`
                 : `receptive field: the whole image (the graph mixes every position before this layer)`;
}
function nav(current) {
  $("#nav").innerHTML = A.layers.map((L, i) =>
    `<a href="#l=${i}" class="${i === current ? "on" : ""}">${esc(L.name)}<small>${L.channels} channels &middot; ${L.shape.slice(1).join("x")} map &middot; ${esc(L.op)}</small></a>`).join("");
}
function layerView(li) {
  const L = A.layers[li];
  nav(li);
  let chans = [...Array(L.channels).keys()];
  if (order === "score") chans.sort((a, b) => L.scores[b * N] - L.scores[a * N] || a - b);
  const dead = chans.filter(c => L.ids[c * N] < 0 || (A.score === "max" && L.scores[c * N] <= 0)).length;
  $("#main").innerHTML = `<h2>${esc(L.name)} <small>(${esc(L.op)})</small></h2>
    <div class=meta>${L.channels} channels, map ${L.shape.slice(1).join("x")}; ${fieldText(L)}.
    Each channel is shown by the crop that excites it most; click one for its ${N} best images.
    ${dead ? `<span class=warn>${dead} channels never fire (spatial max 0 on every image)</span>` : ""}</div>
    <div class=tools><label>order <select id=order><option value=index>by channel</option><option value=score>by top score</option></select></label>
    ${L.overlays.length ? `<label><input type=checkbox id=ov ${overlay ? "checked" : ""}> map overlay</label>` : ""}</div>
    <div class=grid>${chans.map(c => {
      const s = L.scores[c * N], off = L.ids[c * N] < 0 || (A.score === "max" && s <= 0);
      return `<a class="ch${off ? " dead" : ""}" href="#l=${li}&c=${c}" title="channel ${c}: best score ${s}">${tile(L, c, 0, 1.25, overlay)}${c}<br>${s.toPrecision(3)}</a>`;
    }).join("")}</div>`;
  $("#order").value = order;
  $("#order").onchange = e => { order = e.target.value; layerView(li); };
  if ($("#ov")) $("#ov").onchange = e => { overlay = e.target.checked; layerView(li); };
}
function channelView(li, c) {
  const L = A.layers[li];
  nav(li);
  const [H, W] = A.input, f = L.field, mw = L.shape[2];
  const ex = [], byFolder = new Map();
  for (let r = 0; r < N; r++) {
    const id = L.ids[c * N + r];
    if (id < 0) continue;
    const p = L.positions[c * N + r], y = Math.floor(p / mw), x = p % mw;
    let box = [0, 0, W, H];
    if (f.exact) {
      const y0 = f.start[0] + y * f.jump[0], x0 = f.start[1] + x * f.jump[1];
      box = [Math.max(0, x0), Math.max(0, y0), Math.min(W, x0 + f.size[1]), Math.min(H, y0 + f.size[0])];
    }
    const img = A.images[id], parts = img.split(/[\\/]/), file = parts.pop(), folder = parts.pop() || "";
    const name = folder && folder !== ".." ? `${folder}/${file}` : file;
    byFolder.set(folder, (byFolder.get(folder) || 0) + 1);
    ex.push(`<figure>${tile(L, c, r, 3, overlay)}<figcaption>#${r + 1} &middot; score ${L.scores[c * N + r].toPrecision(4)}<br>
      <a href="${esc(encodeURI(img))}">${esc(name)}</a><br>at (${y}, ${x}) of the map; <span style="white-space:nowrap">box x ${box[0]}..${box[2]},</span> <span style="white-space:nowrap">y ${box[1]}..${box[3]}</span></figcaption></figure>`);
  }
  $("#main").innerHTML = `<h2>${esc(L.name)}, channel ${c}</h2>
    <div class=tools><button onclick="location.hash='#l=${li}'">&larr; all ${L.channels} channels</button>
    ${c > 0 ? `<button onclick="location.hash='#l=${li}&c=${c - 1}'">channel ${c - 1}</button>` : ""}
    ${c + 1 < L.channels ? `<button onclick="location.hash='#l=${li}&c=${c + 1}'">channel ${c + 1}</button>` : ""}
    ${L.overlays.length ? `<label><input type=checkbox id=ov ${overlay ? "checked" : ""}> map overlay</label>` : ""}</div>
    <div class=meta>The ${N} images whose spatial ${esc(A.score)} of this channel is highest, cropped to the receptive field
    of the position of the maximum (${fieldText(L)}), in the ${A.input[0]}x${A.input[1]} input the network saw.</div>
    ${byFolder.size > 1 ? `<div class=meta id=by-folder>By folder: ${[...byFolder].sort((a, b) => b[1] - a[1]).map(([f, n]) => `${esc(f || "(top)")} ${n}`).join(", ")}</div>` : ""}
    <div class=ex>${ex.join("") || "<p>No image.</p>"}</div>`;
  if ($("#ov")) $("#ov").onchange = e => { overlay = e.target.checked; channelView(li, c); };
}
function route() {
  const q = new URLSearchParams(location.hash.slice(1));
  const li = Math.min(Math.max(parseInt(q.get("l") || "0", 10) || 0, 0), A.layers.length - 1);
  if (!isNaN(parseInt(q.get("c"), 10))) channelView(li, Math.min(parseInt(q.get("c"), 10), A.layers[li].channels - 1));
  else layerView(li);
  window.scrollTo(0, 0);
}
$("#title").textContent = A.title;
$("#sub").textContent = `${A.image_count} images` + (A.failed ? ` (${A.failed} unreadable)` : "") +
  ` \u00b7 ${A.layers.length} layers \u00b7 ${A.layers.reduce((a, L) => a + L.channels, 0)} channels \u00b7 top ${N} by spatial ${A.score}` +
  ` \u00b7 ${A.model} \u00b7 onnxviz ${A.version}`;
window.addEventListener("hashchange", route);
route();
