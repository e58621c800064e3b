/* onnxviz report pages: the interactive part (the HTML alone already shows every grid).
 *
 * Data reaches the page as scripts and styles, since a page opened from file:// can neither fetch
 * JSON nor read the pixels of an <img>: summary.js calls onnxviz.summary({...}), run.js
 * onnxviz.run({...}), and a layer's `data` stylesheet (maps/NNN-MMM.css, shared by consecutive
 * layers) holds a rule .mNNN b{background-image:url("data:image/png;base64,...")} per layer, which the tiles show
 * and which this script reads back (a data: URL image's pixels can be read). The PNG holds a layer's
 * stored channels as 8-bit gray, tiled row-major in `columns` columns; pixel p of stored channel k
 * stands for low[k] + p / 255 * (high[k] - low[k]).
 */
(function () {
  "use strict";
  var onnxviz = (window.onnxviz = {});
  var slot = null; // what the data script that just ran delivered
  var queue = Promise.resolve();

  onnxviz.summary = function (summary) {
    if (document.body.dataset.page === "image" && !imagePage) imagePage = initImagePage(summary);
    else slot = summary;
  };
  onnxviz.run = function (run) { initRunPage(run); };

  // ------------------------------------------------------------------------------------------
  // Shared pieces

  function $(sel, root) { return (root || document).querySelector(sel); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function urlPath(path) { return String(path).split("/").map(encodeURIComponent).join("/"); }
  function pad(index, digits) { var s = String(index); while (s.length < digits) s = "0" + s; return s; }
  function fmt(x) {
    if (x === null || x === undefined) return "-";
    if (!isFinite(x)) return String(x);
    if (x === 0) return "0";
    var a = Math.abs(x);
    if (a >= 1e-3 && a < 1e5) return String(parseFloat(x.toPrecision(4)));
    return x.toExponential(3);
  }
  function exact(x) { return String(parseFloat(x.toPrecision(7))); }

  /* Load one data script (one at a time: the data is taken from `slot` in its load event, which the
   * browser fires right after the script ran). Resolves to what it delivered. */
  function loadData(src) {
    var p = queue.then(function () {
      return new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        slot = null;
        s.onload = function () {
          var d = slot; slot = null; s.remove();
          if (d) resolve(d); else reject(new Error(src + " holds no onnxviz data"));
        };
        s.onerror = function () { s.remove(); reject(new Error("cannot read " + decodeURIComponent(src))); };
        s.src = src;
        document.head.appendChild(s);
      });
    });
    queue = p.catch(function () {});
    return p;
  }

  /* The base64 PNG of the layer whose tiles (or probe) `element` is: the background of a tile's
   * picture, its `b` (the rule .mNNN b of the layer's stylesheet), or null. */
  function pngOf(element) {
    var px = element.querySelector("b");
    var m = px && /base64,([A-Za-z0-9+\/=]+)/.exec(getComputedStyle(px).backgroundImage);
    return m ? m[1] : null;
  }

  /* Resolves once the page's own stylesheet `href` has loaded. The page links its maps after its
   * scripts, so that they start at once; each link notes in data-state when it has loaded. */
  var parsed = new Promise(function (resolve) {
    if (document.readyState !== "loading") resolve();
    else document.addEventListener("DOMContentLoaded", function () { resolve(); });
  });
  function ownStylesheet(href) {
    return parsed.then(function () {
      var url = new URL(href, document.baseURI).href;
      var link = Array.prototype.find.call(document.querySelectorAll("link[rel=stylesheet]"),
                                           function (l) { return l.href === url; });
      if (!link) throw new Error(decodeURIComponent(href) + " is not linked by this page");
      return new Promise(function (resolve, reject) {
        function settle() {
          if (link.dataset.state === "loaded") resolve();
          else if (link.dataset.state === "failed") reject(new Error("cannot read " + decodeURIComponent(href)));
          else return false;
          return true;
        }
        if (!settle()) { link.addEventListener("load", settle); link.addEventListener("error", settle); }
      });
    });
  }

  /* The base64 PNG of layer `index` from the stylesheet `src` of another page's folder: the
   * stylesheet is linked for the moment (one at a time, on the queue of data scripts), read through
   * an element of the layer's class and dropped again, so that two images' rules never meet. */
  function layerPng(src, index) {
    var p = queue.then(function () {
      return new Promise(function (resolve, reject) {
        var link = el("link", { rel: "stylesheet" }), probe = el("i", { class: "m" + index, hidden: "" });
        probe.appendChild(el("b"));
        function end(settle, value) { link.remove(); probe.remove(); settle(value); }
        link.onload = function () {
          document.body.appendChild(probe);
          var b64 = pngOf(probe);
          if (b64) end(resolve, b64);
          else end(reject, new Error(decodeURIComponent(src) + " holds no maps of layer " + index));
        };
        link.onerror = function () { end(reject, new Error("cannot read " + decodeURIComponent(src))); };
        link.href = src;
        document.head.appendChild(link);
      });
    });
    queue = p.catch(function () {});
    return p;
  }

  /* A base64 PNG -> its gray pixels. A data: URL image is same-origin, so its pixels can be read. */
  function decodeGray(b64) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () {
        var c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        var ctx = c.getContext("2d", { willReadFrequently: true });
        ctx.drawImage(img, 0, 0);
        var rgba = ctx.getImageData(0, 0, c.width, c.height).data;
        var gray = new Uint8Array(c.width * c.height);
        for (var i = 0, j = 0; i < gray.length; i++, j += 4) gray[i] = rgba[j];
        resolve({ w: c.width, h: c.height, gray: gray });
      };
      img.onerror = function () { reject(new Error("the stored map is not a readable PNG")); };
      img.src = "data:image/png;base64," + b64;
    });
  }

  /* The colormap of the page, from its SVG filter (one home: the same table colours the static view). */
  function readLut() {
    var funcs = ["R", "G", "B"].map(function (c) {
      var f = document.querySelector("#cmap feFunc" + c);
      return f.getAttribute("tableValues").trim().split(/\s+/).map(function (v) { return Math.round(parseFloat(v) * 255); });
    });
    var lut = new Uint8Array(256 * 3);
    for (var i = 0; i < 256; i++) for (var c = 0; c < 3; c++) lut[i * 3 + c] = funcs[c][i];
    return lut;
  }
  function cssColour(lut, i) { return "rgb(" + lut[i * 3] + "," + lut[i * 3 + 1] + "," + lut[i * 3 + 2] + ")"; }

  /* [min, max] of stored channel k: its own statistics (channel_stats are aligned with `channels`);
   * low/high when there are none (they are the channel's range when the render scaled per channel). */
  function range(layer, k) {
    var cs = layer.channel_stats;
    if (cs && cs.min && cs.max && cs.min[k] !== null && cs.max[k] !== null && cs.min[k] !== undefined) return [cs.min[k], cs.max[k]];
    return [layer.low[k], layer.high[k]];
  }

  /* The tiles (`<i>`, each its picture `<b>` and channel number) of a layer `L` of the image page,
   * in their current order. The first call notes on each its stored position (data-k) and its
   * channel (data-ch), which the HTML leaves out to stay small. */
  function tilesOf(L) {
    var tiles = Array.prototype.slice.call(L.tiles.children);
    if (!L.numbered) {
      tiles.forEach(function (t, k) { t.dataset.k = k; t.dataset.ch = L.meta.channels[k]; });
      L.numbered = true;
    }
    return tiles;
  }

  /* One stored channel's pixels out of a layer sprite. */
  function channelPixels(sprite, layer, k) {
    var th = layer.tile[0], tw = layer.tile[1], cols = layer.columns;
    var r = Math.floor(k / cols), c = k % cols, out = new Uint8Array(th * tw);
    for (var y = 0; y < th; y++) {
      var from = (r * th + y) * sprite.w + c * tw;
      out.set(sprite.gray.subarray(from, from + tw), y * tw);
    }
    return out;
  }

  /* Colour `pix` (stored 8-bit) into `canvas`: value = low + p/255 (high - low), shown on scale lo..hi
   * (null: the channel's own min..max, i.e. the stored p itself). */
  function paint(canvas, pix, w, h, low, high, lo, hi, lut) {
    canvas.width = w; canvas.height = h;
    var ctx = canvas.getContext("2d");
    var img = ctx.createImageData(w, h), d = img.data, map = new Uint8Array(256);
    for (var p = 0; p < 256; p++) {
      if (lo === null) map[p] = high > low ? p : 0;
      else {
        var v = low + (p / 255) * (high - low);
        map[p] = hi > lo ? Math.max(0, Math.min(255, Math.round(((v - lo) / (hi - lo)) * 255))) : 0;
      }
    }
    for (var i = 0, j = 0; i < pix.length; i++, j += 4) {
      var q = map[pix[i]] * 3;
      d[j] = lut[q]; d[j + 1] = lut[q + 1]; d[j + 2] = lut[q + 2]; d[j + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  // ------------------------------------------------------------------------------------------
  // The page of one image

  var imagePage = null;

  function initImagePage(summary) {
    document.documentElement.classList.replace("nojs", "js");
    var lut = readLut();
    var digits = Math.max(3, String(Math.max.apply(null, summary.layers.map(function (l) { return l.index; }).concat([0]))).length);
    var state = { sort: $("#sort").value, norm: $("#norm").value };
    var layers = [];
    summary.layers.forEach(function (meta) {
      var section = document.getElementById("layer-" + pad(meta.index, digits));
      if (!section || meta.kind === "vector") return;
      layers.push({ meta: meta, section: section, tiles: $(".tiles", section), sprite: null, loading: null, drawn: false, numbered: false });
    });
    var byIndex = {};
    layers.forEach(function (L, i) { L.pos = i; byIndex[L.meta.index] = L; });
    $("#controls").hidden = false;
    // a layer's heading jumped to (#layer-NNN) lands below the sticky bar, whatever its height
    var barHeight = function () {
      document.documentElement.style.setProperty("--bar", $("#controls").offsetHeight + "px");
    };
    barHeight();
    window.addEventListener("resize", barHeight);

    function load(L) {
      if (!L.loading) {
        // the page links the layer's stylesheet, and the tiles carry its rule's class
        L.loading = ownStylesheet(urlPath(L.meta.data))
          .then(function () {
            var b64 = pngOf(L.tiles);
            if (!b64) throw new Error(L.meta.data + " holds no maps of this layer");
            return b64;
          })
          .then(decodeGray)
          .then(function (sprite) { L.sprite = sprite; return L; })
          .catch(function (err) {
            var p = el("p", { class: "warn" }, "The exact maps could not be read (" + err.message + ").");
            L.tiles.before(p);
            throw err;
          });
      }
      return L.loading;
    }

    function scaleOf(L, k) {
      // [null, null]: the stored 8 bits as they are (they span this channel's min..max)
      if (state.norm === "layer") return [L.meta.stats.min, L.meta.stats.max];
      return summary.options.norm === "layer" ? range(L.meta, k) : [null, null];
    }

    function draw(L) {
      if (!L.sprite) return;
      var th = L.meta.tile[0], tw = L.meta.tile[1];
      tilesOf(L).forEach(function (fig) {
        var k = +fig.dataset.k, px = fig.firstElementChild, canvas = $("canvas", px);
        if (!canvas) { canvas = el("canvas"); px.appendChild(canvas); px.classList.add("live"); }
        var s = scaleOf(L, k);
        paint(canvas, channelPixels(L.sprite, L.meta, k), tw, th, L.meta.low[k], L.meta.high[k], s[0], s[1], lut);
      });
      L.drawn = true;
    }

    function legend(L) {
      var lg = $(".legend", L.section);
      if (!lg) return;
      var st = L.meta.stats;
      if (state.norm === "layer") {
        $(".lo", lg).textContent = fmt(st.min); $(".hi", lg).textContent = fmt(st.max);
        $(".norm", lg).textContent = summary.options.colormap + "; one scale for every tile of this layer: " +
          fmt(st.min) + " .. " + fmt(st.max) + " (per layer)";
      } else {
        $(".lo", lg).textContent = "min"; $(".hi", lg).textContent = "max";
        $(".norm", lg).textContent = summary.options.colormap + "; each tile scaled to its own min..max (per channel); " +
          "values in this layer " + fmt(st.min) + " .. " + fmt(st.max);
      }
    }

    function sortKey(L) {
      var cs = L.meta.channel_stats || {};
      var score = state.sort === "index" ? null : cs[state.sort];
      return function (a, b) {  // channel_stats are aligned with the stored channels
        var ca = +a.dataset.ch, cb = +b.dataset.ch;
        if (score) { var d = score[+b.dataset.k] - score[+a.dataset.k]; if (d) return d; }
        return ca - cb;
      };
    }

    function sortTiles(L) {
      var figs = tilesOf(L);
      figs.sort(sortKey(L));
      figs.forEach(function (f) { L.tiles.appendChild(f); });
      var shown = $(".shown", L.section), total = L.meta.shape[0], n = L.meta.channels.length;
      var how = state.sort === "index" ? "by channel number" : "by " + state.sort + ", highest first";
      shown.textContent = n + " of " + total + " channels shown, " + how +
        (n < total && state.sort !== summary.options.sort ? " (the " + n + " stored, chosen by " + summary.options.sort + ")" : "");
    }

    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (!e.isIntersecting) return;
        var L = layers[+e.target.dataset.pos];
        observer.unobserve(e.target);
        load(L).then(draw, function () {});
      });
    }, { rootMargin: "800px 0px" });
    layers.forEach(function (L) {
      L.section.dataset.pos = L.pos;
      observer.observe(L.section);
      legend(L);
      if (state.sort !== summary.options.sort) sortTiles(L);
      L.tiles.addEventListener("mouseover", function (e) {
        var fig = e.target.closest(".tiles > i");
        if (!fig || fig.title) return;
        tilesOf(L);
        var k = +fig.dataset.k, ch = +fig.dataset.ch, r = range(L.meta, k), cs = L.meta.channel_stats || {};
        fig.title = "channel " + ch + ": min " + fmt(r[0]) + ", max " + fmt(r[1]) + (cs.mean ? ", mean " + fmt(cs.mean[k]) : "") +
          (r[0] === 0 && r[1] === 0 ? " (zero everywhere for this image)" : r[0] === r[1] ? " (constant)" : "") + "; click to open";
      });
      L.tiles.addEventListener("click", function (e) {
        var fig = e.target.closest(".tiles > i");
        if (fig) viewer.open(L, fig);
      });
    });

    // a factorized part's channel (explain section): open it in the viewer when its tile is on the page
    document.addEventListener("click", function (e) {
      var a = e.target.closest && e.target.closest("a[data-open]");
      if (!a) return;
      var want = a.dataset.open.split(":"), L = byIndex[+want[0]];
      if (!L) return;
      var fig = tilesOf(L).filter(function (f) { return f.dataset.ch === want[1]; })[0];
      if (!fig) return; // not among the stored channels: the link scrolls to the layer
      e.preventDefault();
      viewer.open(L, fig);
    });

    $("#sort").addEventListener("change", function () { state.sort = this.value; layers.forEach(sortTiles); viewer.refresh(); });
    $("#norm").addEventListener("change", function () {
      state.norm = this.value;
      layers.forEach(function (L) { legend(L); if (L.drawn) draw(L); });
      viewer.refresh();
    });

    var viewer = makeViewer(summary, lut, layers, load, scaleOf, state);
    return { summary: summary, layers: layers, byIndex: byIndex, state: state, viewer: viewer };
  }

  function makeViewer(summary, lut, layers, load, scaleOf, state) {
    var root = $("#viewer");
    root.innerHTML =
      "<div class=vbox role=dialog aria-modal=true aria-labelledby=v-title><h3 id=v-title></h3><div class=vbody>" +
      "<div class=vstage><img alt='input image' id=v-input><canvas id=v-canvas></canvas><div id=v-cursor hidden></div></div>" +
      "<div class=vside><div class=legend><span class=cbarbox><span class=cbar></span><span class=scale><span class=lo></span>" +
      "<span class=hi></span></span></span><span class=norm id=v-norm></span></div>" +
      "<div class=readout id=v-readout></div><div class=meta id=v-stats></div>" +
      "<div class=vrow><button type=button data-go=ch-1>&larr; channel</button><button type=button data-go=ch1>channel &rarr;</button></div>" +
      "<div class=vrow><button type=button data-go=layer-1>&uarr; layer</button><button type=button data-go=layer1>layer &darr;</button></div>" +
      "<div class=vrow><label><input type=checkbox id=v-overlay> over the input image (o)</label></div>" +
      "<div class=vrow><label>opacity <input type=range id=v-opacity min=0.1 max=1 step=0.05 value=0.6></label></div>" +
      "<div class=vrow><a id=v-compare href='../index.html'>this channel in every image of the run</a></div>" +
      "<div class=vrow><button type=button data-go=close>close (Esc)</button></div></div></div></div>";
    var canvas = $("#v-canvas"), input = $("#v-input"), readout = $("#v-readout"), overlay = $("#v-overlay"), opacity = $("#v-opacity");
    input.src = urlPath(summary.input.file || "input.png");
    var firstBar = $("section.layer .cbar");
    if (firstBar) $(".cbar", root).style.background = firstBar.style.background;
    var cur = null; // {L, fig, pix}
    var token = 0;

    function show(L, fig) {
      var my = ++token;
      document.querySelectorAll(".tiles > i.current").forEach(function (f) { f.classList.remove("current"); });
      fig.classList.add("current");
      root.hidden = false;
      var figs = tilesOf(L), pos = figs.indexOf(fig);  // first: it numbers the tiles
      var k = +fig.dataset.k, ch = +fig.dataset.ch, meta = L.meta;
      $("#v-title").textContent = meta.name + " (layer " + meta.index + "), channel " + ch +
        "  \u00b7  tile " + (pos + 1) + " of " + figs.length;
      readout.textContent = "loading the exact map...";
      return load(L).then(function () {
        if (my !== token) return;
        var h = meta.tile[0], w = meta.tile[1];
        var pix = channelPixels(L.sprite, meta, k);
        var s = scaleOf(L, k);
        paint(canvas, pix, w, h, meta.low[k], meta.high[k], s[0], s[1], lut);
        var maxW = Math.max(200, Math.min(window.innerWidth - 420, 1100)), maxH = Math.max(200, window.innerHeight - 130);
        var f = Math.min(maxW / w, maxH / h);
        if (f >= 1) f = Math.floor(f);
        canvas.style.width = Math.round(w * f) + "px";
        canvas.style.height = Math.round(h * f) + "px";
        cur = { L: L, fig: fig, pix: pix, k: k, ch: ch };
        $("#v-compare").href = "../index.html#compare=" + meta.index + ":" + ch;
        applyOverlay();
        var rg = range(meta, k), lo = rg[0], hi = rg[1], cs = meta.channel_stats || {};
        var isLayer = state.norm === "layer";
        $(".lo", root).textContent = fmt(isLayer ? meta.stats.min : lo);
        $(".hi", root).textContent = fmt(isLayer ? meta.stats.max : hi);
        $("#v-norm").textContent = isLayer ? "scale of the whole layer" : "scale of this channel";
        var status = lo === 0 && hi === 0 ? "zero everywhere for this image (dead for this image)"
          : lo === hi ? "constant " + fmt(lo) + " over the whole map (not zero)" : "";
        $("#v-stats").textContent = w + " x " + h + " px  \u00b7  min " + fmt(lo) + "  max " + fmt(hi) +
          (cs.mean ? "  mean " + fmt(cs.mean[k]) : "") + "  \u00b7  8-bit step " + fmt((meta.high[k] - meta.low[k]) / 255) +
          (status ? "  \u00b7  " + status : "");
        readout.textContent = "move the cursor over the map to read its value";
        $("#v-cursor").hidden = true;
      });
    }

    function applyOverlay() {
      input.style.visibility = overlay.checked ? "visible" : "hidden";
      canvas.style.opacity = overlay.checked ? opacity.value : 1;
    }

    function step(dch, dlayer) {
      if (!cur) return;
      var L = cur.L, figs = tilesOf(L), pos = figs.indexOf(cur.fig);
      if (dlayer) {
        var next = layers[L.pos + dlayer];
        if (!next) return;
        var nf = tilesOf(next);
        show(next, nf[Math.min(pos, nf.length - 1)]);
      } else {
        var p = pos + dch;
        if (p >= 0 && p < figs.length) show(L, figs[p]);
      }
    }

    canvas.addEventListener("mousemove", function (e) {
      if (!cur) return;
      var r = canvas.getBoundingClientRect(), m = cur.L.meta, w = m.tile[1], h = m.tile[0];
      var x = Math.min(w - 1, Math.max(0, Math.floor(((e.clientX - r.left) / r.width) * w)));
      var y = Math.min(h - 1, Math.max(0, Math.floor(((e.clientY - r.top) / r.height) * h)));
      var p = cur.pix[y * w + x], lo = m.low[cur.k], hi = m.high[cur.k];
      var v = lo + (p / 255) * (hi - lo);
      readout.textContent = "channel " + cur.ch + " at x " + x + ", y " + y + ": " + exact(v);
      var c = $("#v-cursor");
      c.hidden = false;
      c.style.left = (x * r.width) / w + "px"; c.style.top = (y * r.height) / h + "px";
      c.style.width = r.width / w + "px"; c.style.height = r.height / h + "px";
    });
    canvas.addEventListener("mouseleave", function () {
      $("#v-cursor").hidden = true;
      if (cur) readout.textContent = "move the cursor over the map to read its value";
    });
    overlay.addEventListener("change", applyOverlay);
    opacity.addEventListener("input", applyOverlay);
    root.addEventListener("click", function (e) {
      var go = e.target.dataset && e.target.dataset.go;
      if (e.target === root || go === "close") close();
      else if (go === "ch-1") step(-1, 0);
      else if (go === "ch1") step(1, 0);
      else if (go === "layer-1") step(0, -1);
      else if (go === "layer1") step(0, 1);
    });
    function close() {
      root.hidden = true; token++;
      if (cur) cur.fig.scrollIntoView({ block: "nearest" });
      cur = null;
    }
    document.addEventListener("keydown", function (e) {
      if (root.hidden || e.ctrlKey || e.metaKey || e.altKey) return;
      var used = true;
      if (e.key === "ArrowLeft") step(-1, 0);
      else if (e.key === "ArrowRight") step(1, 0);
      else if (e.key === "ArrowUp") step(0, -1);
      else if (e.key === "ArrowDown") step(0, 1);
      else if (e.key === "Escape") close();
      else if (e.key === "o") { overlay.checked = !overlay.checked; applyOverlay(); }
      else used = false;
      if (used) e.preventDefault();
    });
    return {
      open: function (L, fig) { return show(L, fig); },
      refresh: function () { if (cur && !root.hidden) show(cur.L, cur.fig); },
      current: function () { return cur; }
    };
  }

  // ------------------------------------------------------------------------------------------
  // The page of a run: the compare view (the gallery is plain HTML)

  var PAGE = 24;
  var summaries = new Map(); // folder -> summary (the last few pages)

  function getSummary(folder) {
    if (summaries.has(folder)) return Promise.resolve(summaries.get(folder));
    return loadData(urlPath(folder) + "/summary.js").then(function (s) {
      summaries.set(folder, s);
      if (summaries.size > 4 * PAGE) summaries.delete(summaries.keys().next().value);
      return s;
    });
  }

  function initRunPage(run) {
    document.documentElement.classList.replace("nojs", "js");
    var section = $("#compare");
    if (!section) return;
    section.hidden = false;
    var lut = readLut();
    var select = $("#cmp-layer"), chInput = $("#cmp-channel"), tiles = $("#cmp-tiles"), legendEl = $("#cmp-legend");
    var digits = Math.max(3, String(Math.max.apply(null, run.layers.map(function (l) { return l.index; }).concat([0]))).length);
    run.layers.forEach(function (l, i) {
      var o = el("option", { value: i }, pad(l.index, digits) + " " + l.name + "  (" + l.shape.join(" x ") + (l.kind === "vector" ? ", vector" : "") + ")");
      select.appendChild(o);
    });
    var page = 0, gen = 0;
    var pages = Math.ceil(run.images.length / PAGE);

    function layer() { return run.layers[+select.value]; }
    function channel() {
      var C = layer().shape[0];
      var c = Math.max(0, Math.min(C - 1, parseInt(chInput.value, 10) || 0));
      chInput.max = C - 1;
      if (String(c) !== chInput.value) chInput.value = c;
      return c;
    }

    function draw() {
      var my = ++gen, lyr = layer(), ch = channel();
      var imgs = run.images.slice(page * PAGE, page * PAGE + PAGE);
      $("#cmp-channels").textContent = "0 .. " + (lyr.shape[0] - 1);
      $("#cmp-range").textContent = "images " + (page * PAGE + 1) + "-" + (page * PAGE + imgs.length) + " of " + run.images.length;
      $("#cmp-prev").disabled = page === 0;
      $("#cmp-next").disabled = page >= pages - 1;
      tiles.textContent = "";
      legendEl.textContent = "loading " + imgs.length + " images...";
      var entries = [];
      var chain = Promise.resolve();
      imgs.forEach(function (img) {
        chain = chain.then(function () {
          if (my !== gen) return;
          return getSummary(img.folder).then(function (s) {
            var L = s.layers.filter(function (l) { return l.index === lyr.index; })[0];
            entries.push({ img: img, L: L || null });
          }, function (err) { entries.push({ img: img, L: null, error: err.message }); });
        });
      });
      chain.then(function () {
        if (my !== gen) return;
        // one scale for every image shown: the channel's min and max over them
        var lo = Infinity, hi = -Infinity;
        entries.forEach(function (e) {
          if (!e.L) return;
          var a, b;
          if (e.L.kind === "vector") { a = b = e.L.values[ch]; }
          else {
            var k = e.L.channels.indexOf(ch);
            if (k < 0) return;  // not stored for this image: nothing known about it
            var r = range(e.L, k); a = r[0]; b = r[1];
          }
          if (a < lo) lo = a; if (b > hi) hi = b;
        });
        var none = lo > hi;  // no image shown stores this channel
        if (none) { lo = 0; hi = 0; }
        legendEl.innerHTML = "";
        var box = el("span", { class: "cbarbox" }), bar = el("span", { class: "cbar" });
        bar.style.background = gradient(lut);
        var sc = el("span", { class: "scale" });
        sc.appendChild(el("span", { class: "lo" }, fmt(lo))); sc.appendChild(el("span", { class: "hi" }, fmt(hi)));
        box.appendChild(bar); box.appendChild(sc); legendEl.appendChild(box);
        legendEl.appendChild(el("span", { class: "norm" }, "channel " + ch + " of " + lyr.name + ": one scale for these " +
          entries.length + " images, " + fmt(lo) + " .. " + fmt(hi) +
          (none ? " (no image shown stores this channel)" : lo === 0 && hi === 0 ? " (zero everywhere in every one of them)" : "")));
        var draws = [];
        entries.forEach(function (e) {
          var fig = el("figure", { class: "cmp-tile", "data-folder": e.img.folder });
          var a = el("a", { href: urlPath(e.img.folder) + "/index.html#layer-" + pad(lyr.index, digits) });
          fig.appendChild(a);
          var cap = el("figcaption", {}, (e.img.group ? e.img.group + "/" : "") + e.img.image_name);
          fig.appendChild(cap);
          tiles.appendChild(fig);
          if (!e.L) { a.appendChild(el("div", { class: "missing" }, e.error || "layer not rendered for this image")); return; }
          var cs = e.L.channel_stats;
          if (e.L.kind === "vector") {
            var v = e.L.values[ch], c = el("canvas");
            var frac = hi > lo ? (v - lo) / (hi - lo) : 0;
            c.width = 160; c.height = 24; c.style.width = "160px"; c.style.height = "24px";
            var ctx = c.getContext("2d");
            ctx.fillStyle = "#eee"; ctx.fillRect(0, 0, 160, 24);
            ctx.fillStyle = cssColour(lut, Math.round(frac * 255)); ctx.fillRect(0, 0, Math.max(1, frac * 160), 24);
            a.appendChild(c);
            cap.appendChild(el("br")); cap.appendChild(document.createTextNode("value " + fmt(v)));
            return;
          }
          var k = e.L.channels.indexOf(ch);
          var h = e.L.tile[0], w = e.L.tile[1];
          var f = Math.max(1, Math.floor(160 / Math.max(h, w)));
          var dw = w * f, dh = h * f;
          if (Math.max(h, w) > 160) { dw = Math.round(w * 160 / Math.max(h, w)); dh = Math.round(h * 160 / Math.max(h, w)); }
          if (k >= 0) {
            cap.appendChild(el("br"));
            cap.appendChild(document.createTextNode("max " + fmt(range(e.L, k)[1]) + (cs && cs.mean ? ", mean " + fmt(cs.mean[k]) : "")));
          }
          if (k < 0) {
            var m = el("div", { class: "missing" }, "channel " + ch + " not stored for this image (render with --max-channels or --channels)");
            m.style.width = dw + "px"; m.style.height = dh + "px";
            a.appendChild(m);
            return;
          }
          var canvas = el("canvas");
          canvas.style.width = dw + "px"; canvas.style.height = dh + "px";
          a.appendChild(canvas);
          // stylesheets load one at a time (see layerPng); the PNGs decode side by side
          draws.push(sprite(e.img.folder, e.L).then(function (sp) {
            if (my !== gen) return;
            paint(canvas, channelPixels(sp, e.L, k), w, h, e.L.low[k], e.L.high[k], lo, hi, lut);
            fig.classList.add("drawn");
          }, function (err) { a.textContent = ""; a.appendChild(el("div", { class: "missing" }, err.message)); }));
        });
        return Promise.all(draws);
      }).then(function () { if (my === gen) section.dataset.ready = String(my); });
    }

    // the decoded maps of the layer and page shown: stepping through channels reads no file again
    var sprites = new Map(), spritesKey = "";
    function sprite(folder, L) {
      var key = L.index + "/" + page;
      if (key !== spritesKey) { sprites.clear(); spritesKey = key; }
      if (!sprites.has(folder)) {
        var p = layerPng(urlPath(folder) + "/" + urlPath(L.data), L.index).then(decodeGray);
        sprites.set(folder, p);
        p.catch(function () { if (sprites.get(folder) === p) sprites.delete(folder); });
      }
      return sprites.get(folder);
    }

    function gradient(l) {
      var stops = [];
      for (var i = 0; i <= 16; i++) stops.push(cssColour(l, Math.round((i * 255) / 16)));
      return "linear-gradient(to right," + stops.join(",") + ")";
    }

    // ../index.html#compare=<layer index>:<channel>, as the image pages and the parts' legend link here;
    // a layer the run does not show leaves the view as it is
    function fromHash() {
      var want = /compare=(\d+):(\d+)/.exec(decodeURIComponent(location.hash));
      var found = -1;
      if (want) run.layers.forEach(function (l, i) { if (l.index === +want[1]) found = i; });
      if (found < 0 || +want[2] >= run.layers[found].shape[0]) return false;
      select.value = found;
      chInput.value = want[2];
      return true;
    }
    fromHash();
    window.addEventListener("hashchange", function () {
      if (fromHash()) { page = 0; draw(); section.scrollIntoView(); }
    });
    document.addEventListener("keydown", function (e) {
      var t = e.target.tagName;
      if (t === "INPUT" || t === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        var c = channel() + (e.key === "ArrowLeft" ? -1 : 1);
        if (c >= 0 && c < layer().shape[0]) { chInput.value = c; draw(); }
        e.preventDefault();
      }
    });
    select.addEventListener("change", function () { chInput.value = 0; draw(); });
    chInput.addEventListener("change", draw);
    $("#cmp-prev").addEventListener("click", function () { if (page > 0) { page--; draw(); } });
    $("#cmp-next").addEventListener("click", function () { if (page < pages - 1) { page++; draw(); } });
    draw();
    onnxviz.compare = { draw: draw };
  }
})();
