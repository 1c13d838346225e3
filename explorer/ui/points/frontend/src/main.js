// Images as points: every test image drawn as its own thumbnail at its 2-D embedding position.
//
// Why deck.gl: its IconLayer draws N instanced quads, each textured from a rectangle of one
// pre-packed sprite atlas (our Python-built atlas, one cell per image), with sizes in world
// units so thumbnails grow as you zoom; ScatterplotLayer draws the same N points as dots, and
// OrthographicView gives 2-D pan/zoom, several views on one canvas (linked panels) and binary
// attributes (Float32Array positions, Uint8Array colours: no per-point JavaScript objects).
// regl-scatterplot (lasso built in) and deepscatter draw coloured points only, no per-point
// textures; pydeck would need a Mapbox-free custom build and cannot return a selection.
//
// Level of detail: dots while a thumbnail would be under LOD_PX on screen, thumbnails (on a
// frame in the point's colour) from there on. Hover, box and lasso are computed on the CPU in
// world coordinates (a uniform grid for hover), so no GPU read-back is needed.

import { Deck, OrthographicView } from "@deck.gl/core";
import { IconLayer, ScatterplotLayer } from "@deck.gl/layers";
import { connect, setComponentValue, setFrameHeight } from "./bridge.js";

const WORLD = 1000; // each panel's embedding is scaled to a WORLD x WORLD square
const LOD_PX = 10; // thumbnails from this on-screen size up, dots below
const FRAME = 1.14; // the coloured frame around a thumbnail, relative to its size
const TOOLBAR_CSS = `
.pv{font:13px "Source Sans Pro",system-ui,sans-serif;color:#262730;user-select:none}
.pv-bar{display:flex;flex-wrap:wrap;gap:6px 12px;align-items:center;margin:0 0 6px}
.pv-bar button{font:inherit;padding:3px 10px;border:1px solid #c9cbd1;border-radius:6px;background:#fff;cursor:pointer}
.pv-bar button.on{background:#262730;color:#fff;border-color:#262730}
.pv-bar label{display:inline-flex;gap:4px;align-items:center}
.pv-bar input[type=range]{width:90px}
.pv-status{color:#555}
.pv-stage{position:relative;border:1px solid #e6e6e6;border-radius:6px;overflow:hidden;background:#fff}
.pv-overlay{position:absolute;inset:0;pointer-events:none}
.pv-title{position:absolute;top:4px;font-weight:600;font-size:12px;background:rgba(255,255,255,.8);padding:1px 6px;border-radius:4px;pointer-events:none}
.pv-tip{position:absolute;display:none;pointer-events:none;background:#fff;border:1px solid #bbb;border-radius:6px;padding:6px;box-shadow:0 2px 8px rgba(0,0,0,.25);font-size:12px;z-index:2;max-width:220px}
.pv-tip canvas{display:block;margin:0 auto 4px;image-rendering:pixelated;width:96px;height:96px}
.pv-legend{display:flex;flex-wrap:wrap;gap:2px 4px;margin-top:6px}
.pv-legend span{cursor:pointer;padding:1px 6px;border-radius:4px;white-space:nowrap}
.pv-legend span:hover{background:#f0f2f6}
.pv-legend span.off{opacity:.35;text-decoration:line-through}
.pv-legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
`;

// --- data ------------------------------------------------------------------------------------

function bytesOf(v) {
  if (v == null) return null;
  if (typeof v === "string") {
    const bin = atob(v);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new Error("expected bytes or base64");
}

// A typed array over a copy of the bytes (the copy is aligned whatever the message's offset).
function typed(v, Type) {
  const b = bytesOf(v);
  return b == null ? null : new Type(b.slice().buffer);
}

// The wire format (see explorer/ui/points/view.py): bytes or base64 for the arrays.
export function decode(args) {
  const n = args.n;
  const xy = typed(args.xy, Float32Array); // (K, N, 2)
  const k = args.titles.length;
  if (xy.length !== k * n * 2) throw new Error(`positions hold ${xy.length} floats, not ${k}x${n}x2`);
  return {
    n,
    titles: args.titles,
    xy,
    labels: typed(args.labels, Int32Array),
    pred: typed(args.pred, Int32Array),
    ids: typed(args.ids, Int32Array),
    conf: typed(args.conf, Float32Array),
    rgba: bytesOf(args.rgba).slice(),
    groups: typed(args.groups, Int32Array),
    shown: bytesOf(args.shown).slice(),
    legend: args.legend,
    names: args.names,
    atlas: { ...args.atlas, png: bytesOf(args.atlas_png) },
    selected: args.selected || [],
    size: args.size || 4,
    opacity: args.opacity ?? 0.85,
    height: args.height || 560,
    dataId: args.data_id || "",
    interactive: args.interactive !== false,
  };
}

// Per panel: positions scaled into [0, WORLD]^2 (y flipped: up on screen) and a hover grid.
function panelGeometry(xy, p, n) {
  const off = p * n * 2;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = xy[off + 2 * i], y = xy[off + 2 * i + 1];
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  const s = WORLD / (Math.max(x1 - x0, y1 - y0) || 1);
  const cx = (WORLD - (x1 - x0) * s) / 2, cy = (WORLD - (y1 - y0) * s) / 2;
  const pos = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    pos[2 * i] = cx + (xy[off + 2 * i] - x0) * s;
    pos[2 * i + 1] = WORLD - (cy + (xy[off + 2 * i + 1] - y0) * s);
  }
  // uniform grid, CSR: cell c holds order[start[c] .. start[c + 1])
  const g = Math.max(8, Math.ceil(Math.sqrt(n) / 2));
  const cellOf = new Int32Array(n);
  const start = new Int32Array(g * g + 1);
  for (let i = 0; i < n; i++) {
    const gx = Math.min(g - 1, Math.max(0, Math.floor((pos[2 * i] / WORLD) * g)));
    const gy = Math.min(g - 1, Math.max(0, Math.floor((pos[2 * i + 1] / WORLD) * g)));
    cellOf[i] = gy * g + gx;
    start[cellOf[i] + 1]++;
  }
  for (let c = 0; c < g * g; c++) start[c + 1] += start[c];
  const fill = start.slice(0, g * g), order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[fill[cellOf[i]]++] = i;
  return { pos, grid: { g, start, order } };
}

// IconLayer whose icon i is atlas cell i: the frame is computed from the index, so no
// mapping object of N entries is built. `grid` = {cols, cell, scale, mask}.
class AtlasIconLayer extends IconLayer {
  getInstanceIconDef(i) {
    const { cols, cell, scale, mask } = this.props.grid;
    const c = cell * scale;
    return [0, 0, (i % cols) * c, Math.floor(i / cols) * c, c, c, mask];
  }
}
AtlasIconLayer.layerName = "AtlasIconLayer";
AtlasIconLayer.defaultProps = { grid: { type: "object", value: null, compare: true } };

function insidePolygon(x, y, poly) {
  let inside = false;
  for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
    const [xa, ya] = poly[a], [xb, yb] = poly[b];
    if (ya > y !== yb > y && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) inside = !inside;
  }
  return inside;
}

// --- the view ----------------------------------------------------------------------------------

export function mount(root, args, onSelect) {
  if (!document.getElementById("pv-css")) {
    const style = document.createElement("style");
    style.id = "pv-css";
    style.textContent = TOOLBAR_CSS;
    document.head.appendChild(style);
  }
  const view = new PointsView(root, onSelect || (() => {}));
  view.update(args);
  window.__points = view; // the last view mounted: tests and the benchmark drive it
  return view;
}

class PointsView {
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.mode = "pan";
    this.hidden = new Set();
    this.selected = new Int32Array(0);
    this.selectedPanel = -1;
    this.viewStates = {};
    this.texture = null;
    this.frames = 0;
    this.build();
  }

  build() {
    const r = this.root;
    r.classList.add("pv");
    r.innerHTML = `<div class="pv-bar">
      <button data-mode="pan" class="on" title="Drag to pan, wheel to zoom">Pan</button>
      <button data-mode="box" title="Drag a box to select (Shift adds)">Box</button>
      <button data-mode="lasso" title="Draw a lasso to select (Shift adds)">Lasso</button>
      <button data-act="clear">Clear</button>
      <button data-act="fit" title="Show every point">Fit</button>
      <label>size <input type="range" data-ctl="size" min="1" max="16" step="0.5"></label>
      <label>opacity <input type="range" data-ctl="opacity" min="0.1" max="1" step="0.05"></label>
      <span class="pv-status"></span></div>
      <div class="pv-stage"><div class="pv-overlay"><canvas></canvas></div><div class="pv-tip"></div></div>
      <div class="pv-legend"></div>`;
    this.stage = r.querySelector(".pv-stage");
    this.overlay = r.querySelector(".pv-overlay canvas");
    this.tip = r.querySelector(".pv-tip");
    this.status = r.querySelector(".pv-status");
    this.legendEl = r.querySelector(".pv-legend");
    r.querySelectorAll("[data-mode]").forEach((b) =>
      b.addEventListener("click", () => this.setMode(b.dataset.mode)),
    );
    r.querySelector('[data-act="clear"]').addEventListener("click", () => this.select(new Int32Array(0), -1, true));
    r.querySelector('[data-act="fit"]').addEventListener("click", () => this.fit());
    this.sizeCtl = r.querySelector('[data-ctl="size"]');
    this.opacityCtl = r.querySelector('[data-ctl="opacity"]');
    this.sizeCtl.addEventListener("input", () => { this.size = +this.sizeCtl.value; this.render(); });
    this.opacityCtl.addEventListener("input", () => { this.opacity = +this.opacityCtl.value; this.render(); });
    this.stage.addEventListener("pointerdown", (e) => this.dragStart(e));
    this.stage.addEventListener("pointermove", (e) => this.pointerMove(e));
    window.addEventListener("pointerup", (e) => this.dragEnd(e));
    this.stage.addEventListener("pointerleave", () => { this.tip.style.display = "none"; });
    new ResizeObserver(() => this.resize()).observe(this.stage);
  }

  // New arguments (each script run): rebuild what changed, keep zoom, hidden classes, selection.
  update(args) {
    const d = decode(args);
    const same = this.d && this.d.dataId === d.dataId;
    const colorsChanged = !this.d || this.d.rgba.length !== d.rgba.length ||
      JSON.stringify(this.d.legend) !== JSON.stringify(d.legend) ||
      this.d.shown.some((v, i) => v !== d.shown[i]) || this.d.rgba.some((v, i) => v !== d.rgba[i]);
    const prev = this.d;
    this.d = d;
    this.stage.style.height = d.height + "px";
    if (!same) {
      this.panels = d.titles.map((_, p) => panelGeometry(d.xy, p, d.n));
      this.viewStates = {};
      this.hidden.clear();
      this.selected = Int32Array.from(d.selected.filter((i) => i >= 0 && i < d.n));
      this.size = d.size;
      this.opacity = d.opacity;
      this.stage.querySelectorAll(".pv-title").forEach((t) => t.remove());
      d.titles.forEach((t, p) => {
        const el = document.createElement("div");
        el.className = "pv-title";
        el.textContent = t;
        el.style.left = `calc(${(100 * p) / d.titles.length}% + 6px)`;
        this.stage.appendChild(el);
      });
      const k = d.titles.length;
      this.thumbWorld = (0.9 * WORLD) / Math.sqrt(d.n); // a thumbnail's side at size 4
      this.loadAtlas(d.atlas);
      if (!this.deck) this.createDeck(k);
      else this.deck.setProps({ views: this.views(k) });
      this.fit();
    } else if (prev && JSON.stringify(prev.selected) !== JSON.stringify(d.selected)) {
      this.selected = Int32Array.from(d.selected.filter((i) => i >= 0 && i < d.n));
    }
    if (!same || colorsChanged) this.recolor();
    this.sizeCtl.value = this.size;
    this.opacityCtl.value = this.opacity;
    this.render();
  }

  async loadAtlas(atlas) {
    const bitmap = await createImageBitmap(new Blob([atlas.png], { type: "image/png" }));
    this.bitmap = bitmap;
    const ready = () => {
      const device = this.deck.device;
      const max = device.limits.maxTextureDimension2D;
      let img = bitmap, scale = 1;
      if (bitmap.width > max || bitmap.height > max) { // shrink the whole grid uniformly
        scale = max / Math.max(bitmap.width, bitmap.height);
        const c = new OffscreenCanvas(Math.floor(bitmap.width * scale), Math.floor(bitmap.height * scale));
        c.getContext("2d").drawImage(bitmap, 0, 0, c.width, c.height);
        img = c;
      }
      if (this.texture) this.texture.destroy();
      this.texture = device.createTexture({
        data: img, width: img.width, height: img.height, format: "rgba8unorm",
        mipLevels: device.getMipLevelCount(img.width, img.height),
        sampler: { minFilter: "linear", magFilter: "linear", mipmapFilter: "linear",
                   addressModeU: "clamp-to-edge", addressModeV: "clamp-to-edge" },
      });
      this.texture.generateMipmapsWebGL();
      this.atlasScale = scale;
      this.textureBytes = Math.round((img.width * img.height * 4 * 4) / 3); // RGBA8 + mipmaps
      this.render();
    };
    if (this.deck.device) ready();
    else this.onDevice = ready;
  }

  views(k) {
    const key = `${k}:${this.mode}`;
    if (this._views && this._views.key === key) return this._views.list;
    const pan = this.mode === "pan";
    const list = Array.from({ length: k }, (_, p) => new OrthographicView({
      id: `p${p}`, x: `${(100 * p) / k}%`, width: `${100 / k}%`, height: "100%",
      controller: { dragPan: pan, doubleClickZoom: pan, scrollZoom: true, inertia: false },
    }));
    this._views = { key, list };
    return list;
  }

  createDeck(k) {
    this.deck = new Deck({
      parent: this.stage,
      width: "100%",
      height: "100%",
      views: this.views(k),
      viewState: this.viewStates,
      layers: [],
      layerFilter: ({ layer, viewport }) => layer.id.endsWith(`@${viewport.id}`),
      onViewStateChange: ({ viewId, viewState }) => {
        this.viewStates = { ...this.viewStates, [viewId]: viewState };
        this.render(false);
      },
      onDeviceInitialized: () => { if (this.onDevice) { this.onDevice(); this.onDevice = null; } },
      onAfterRender: () => { // timings the benchmark reads (ms since navigation start)
        this.frames++;
        const drawn = this.deck.props.layers.length > 0;
        if (drawn && !this.firstFrameAt) this.firstFrameAt = performance.now();
        if (this.texture && !this.atlasFrameAt) this.atlasFrameAt = performance.now();
      },
      getCursor: () => (this.mode === "pan" ? "grab" : "crosshair"),
      controller: true,
    });
    this.stage.appendChild(this.overlay.parentElement); // above deck's canvas
    this.stage.appendChild(this.tip);
    this.stage.querySelectorAll(".pv-title").forEach((t) => this.stage.appendChild(t));
  }

  fit() {
    const k = this.d.titles.length;
    const w = this.stage.clientWidth / k, h = this.d.height;
    const zoom = Math.log2(Math.max(1e-3, Math.min(w, h) / (WORLD * 1.06)));
    const vs = {};
    for (let p = 0; p < k; p++) vs[`p${p}`] = { target: [WORLD / 2, WORLD / 2, 0], zoom, minZoom: zoom - 2, maxZoom: zoom + 12 };
    this.viewStates = vs;
    this.render();
  }

  resize() {
    if (!this.d) return;
    setFrameHeight(this.root.getBoundingClientRect().height + 4);
    if (!Object.keys(this.viewStates).length) this.fit();
  }

  // Colours with the legend's hidden groups and the page's filter as alpha 0.
  recolor() {
    const d = this.d;
    this.colors = d.rgba.slice();
    const count = new Int32Array(d.legend.length);
    for (let i = 0; i < d.n; i++) {
      const on = d.shown[i] && !this.hidden.has(d.groups[i]);
      this.colors[4 * i + 3] = on ? 255 : 0;
      if (d.shown[i]) count[d.groups[i]]++;
    }
    this.visible = (i) => this.colors[4 * i + 3] > 0;
    this.legendEl.innerHTML = "";
    d.legend.forEach(([name, color], gi) => {
      const s = document.createElement("span");
      s.className = this.hidden.has(gi) ? "off" : "";
      s.title = "click: hide/show · double-click: only this";
      s.innerHTML = `<i style="background:${color}"></i>`;
      s.appendChild(document.createTextNode(`${name} (${count[gi]})`));
      s.addEventListener("click", () => { this.hidden.has(gi) ? this.hidden.delete(gi) : this.hidden.add(gi); this.recolor(); this.render(); });
      s.addEventListener("dblclick", () => { this.hidden = new Set(d.legend.map((_, j) => j).filter((j) => j !== gi)); this.recolor(); this.render(); });
      this.legendEl.appendChild(s);
    });
    this.colorVersion = (this.colorVersion || 0) + 1;
    this.data = null; // binary attribute objects are rebuilt for the new colours
  }

  layerData(p) {
    if (!this.data) this.data = {};
    if (!this.data[p]) {
      const { pos } = this.panels[p];
      const n = this.d.n;
      const colors = { value: this.colors, size: 4, normalized: true };
      this.data[p] = {
        dots: { length: n, attributes: { getPosition: { value: pos, size: 2 }, getFillColor: colors } },
        icons: { length: n, attributes: { getPosition: { value: pos, size: 2 }, getColor: colors } },
      };
    }
    return this.data[p];
  }

  selectionData(p) {
    const key = `${p}:${this.selected.length}:${this.selected[0]}:${this.selected[this.selected.length - 1]}`;
    if (!this.ringCache || this.ringCache[p]?.key !== key) {
      this.ringCache = this.ringCache || {};
      const { pos } = this.panels[p];
      const xy = new Float32Array(2 * this.selected.length);
      this.selected.forEach((i, j) => { xy[2 * j] = pos[2 * i]; xy[2 * j + 1] = pos[2 * i + 1]; });
      this.ringCache[p] = { key, data: { length: this.selected.length, attributes: { getPosition: { value: xy, size: 2 } } } };
    }
    return this.ringCache[p].data;
  }

  thumbPx(p) {
    const vs = this.viewStates[`p${p}`];
    return vs ? this.thumbWorld * (this.size / 4) * 2 ** vs.zoom : 0;
  }

  // New layers for the current state. Zoom and pan redraw by themselves; any other change
  // (`force`: atlas, colours, size, selection) is drawn at the next animation frame.
  render(force = true) {
    if (!this.deck || !this.d) return;
    if (force && !this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.deck.redraw("points view"); });
    }
    const layers = [];
    const k = this.d.titles.length;
    const thumb = this.thumbWorld * (this.size / 4);
    for (let p = 0; p < k; p++) {
      const data = this.layerData(p);
      const icons = this.texture && this.thumbPx(p) >= LOD_PX;
      layers.push(new ScatterplotLayer({
        id: `dots@p${p}`, data: data.dots, visible: !icons, radiusUnits: "pixels",
        getRadius: 1, radiusScale: this.size / 2, opacity: this.opacity, stroked: false,
        updateTriggers: { getFillColor: this.colorVersion },
      }));
      if (this.texture) {
        for (const m of [1, 0]) { // the coloured frame (mask), then the thumbnail over it
          const a = this.d.atlas;
          layers.push(new AtlasIconLayer({
            id: `${m ? "frames" : "thumbs"}@p${p}`, data: data.icons, visible: !!icons,
            iconAtlas: this.texture, iconMapping: {}, sizeUnits: "common", getIcon: (_, { index }) => index,
            grid: { cols: a.cols, cell: a.cell, scale: this.atlasScale, mask: m },
            getSize: m ? thumb * FRAME : thumb, opacity: m ? this.opacity : 1, alphaCutoff: 0.01,
            updateTriggers: { getColor: this.colorVersion, getIcon: this.atlasScale },
          }));
        }
      }
      if (this.selected.length) {
        layers.push(new ScatterplotLayer({
          id: `rings@p${p}`, data: this.selectionData(p), filled: false, stroked: true,
          radiusUnits: icons ? "common" : "pixels",
          getRadius: icons ? thumb * 0.75 : this.size / 2 + 3,
          lineWidthUnits: "pixels", getLineWidth: 1.5, getLineColor: [20, 20, 20, 230],
        }));
      }
    }
    this.deck.setProps({ layers, viewState: this.viewStates, views: this.views(k) });
    const shown = this.colors ? this.countVisible() : 0;
    this.status.textContent = `${shown.toLocaleString()} of ${this.d.n.toLocaleString()} shown` +
      (this.selected.length ? ` · ${this.selected.length.toLocaleString()} selected` : "") +
      (this.thumbPx(0) >= LOD_PX ? " · thumbnails" : " · zoom in for thumbnails");
  }

  countVisible() {
    if (this._cv && this._cv[0] === this.colorVersion) return this._cv[1];
    let c = 0;
    for (let i = 0; i < this.d.n; i++) c += this.colors[4 * i + 3] > 0;
    this._cv = [this.colorVersion, c];
    return c;
  }

  setMode(mode) {
    this.mode = mode;
    this.root.querySelectorAll("[data-mode]").forEach((b) => b.classList.toggle("on", b.dataset.mode === mode));
    this.render();
  }

  // Which panel a client point is over, and its viewport.
  locate(e) {
    const rect = this.stage.getBoundingClientRect();
    const x = e.clientX - rect.left, y = e.clientY - rect.top;
    const vps = this.deck.getViewports();
    const vp = vps.find((v) => x >= v.x && x < v.x + v.width && y >= v.y && y < v.y + v.height);
    if (!vp) return null;
    return { x, y, vp, p: Number(vp.id.slice(1)) };
  }

  dragStart(e) {
    if (this.mode === "pan" || e.button !== 0) return;
    const at = this.locate(e);
    if (!at) return;
    this.drag = { ...at, path: [[at.x, at.y]], add: e.shiftKey };
    this.stage.setPointerCapture?.(e.pointerId);
    e.preventDefault();
  }

  pointerMove(e) {
    if (this.drag) {
      const rect = this.stage.getBoundingClientRect();
      this.drag.path.push([e.clientX - rect.left, e.clientY - rect.top]);
      this.drawPath();
      return;
    }
    this.hover(e);
  }

  drawPath() {
    const c = this.overlay, r = this.stage.getBoundingClientRect();
    if (c.width !== r.width || c.height !== r.height) { c.width = r.width; c.height = r.height; }
    const g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    if (!this.drag) return;
    const path = this.screenPolygon();
    g.beginPath();
    path.forEach(([x, y], i) => (i ? g.lineTo(x, y) : g.moveTo(x, y)));
    g.closePath();
    g.fillStyle = "rgba(38,39,48,0.08)";
    g.strokeStyle = "#262730";
    g.setLineDash([4, 3]);
    g.fill();
    g.stroke();
  }

  screenPolygon() {
    const path = this.drag.path;
    if (this.mode === "box") {
      const [x0, y0] = path[0], [x1, y1] = path[path.length - 1];
      return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
    }
    return path;
  }

  dragEnd() {
    if (!this.drag) return;
    const drag = this.drag;
    const poly = this.screenPolygon().map(([x, y]) => drag.vp.unproject([x - drag.vp.x, y - drag.vp.y]));
    this.drag = null;
    this.drawPath();
    if (poly.length < 3) return;
    const { pos } = this.panels[drag.p];
    let bx0 = Infinity, bx1 = -Infinity, by0 = Infinity, by1 = -Infinity;
    for (const [x, y] of poly) { bx0 = Math.min(bx0, x); bx1 = Math.max(bx1, x); by0 = Math.min(by0, y); by1 = Math.max(by1, y); }
    const picked = drag.add ? new Set(this.selected) : new Set();
    for (let i = 0; i < this.d.n; i++) {
      if (!this.visible(i)) continue;
      const x = pos[2 * i], y = pos[2 * i + 1];
      if (x < bx0 || x > bx1 || y < by0 || y > by1) continue;
      if (this.mode === "box" || insidePolygon(x, y, poly)) picked.add(i);
    }
    this.select(Int32Array.from([...picked].sort((a, b) => a - b)), drag.p, true);
  }

  select(positions, panel, notify) {
    this.selected = positions;
    this.selectedPanel = panel;
    this.render();
    if (notify) this.onSelect({ selected: Array.from(positions), panel, hidden: [...this.hidden].sort((a, b) => a - b) });
  }

  // The nearest visible point under the cursor, within its drawn size.
  nearest(at) {
    const { pos, grid } = this.panels[at.p];
    const [wx, wy] = at.vp.unproject([at.x - at.vp.x, at.y - at.vp.y]);
    const scale = 2 ** this.viewStates[`p${at.p}`].zoom;
    const px = Math.max(this.size / 2 + 3, this.thumbPx(at.p) >= LOD_PX ? this.thumbPx(at.p) / 2 : 0);
    const r = px / scale;
    const { g, start, order } = grid;
    const c0 = Math.max(0, Math.floor(((wx - r) / WORLD) * g)), c1 = Math.min(g - 1, Math.floor(((wx + r) / WORLD) * g));
    const r0 = Math.max(0, Math.floor(((wy - r) / WORLD) * g)), r1 = Math.min(g - 1, Math.floor(((wy + r) / WORLD) * g));
    let best = -1, bestD = r * r;
    for (let gy = r0; gy <= r1; gy++) {
      for (let gx = c0; gx <= c1; gx++) {
        const c = gy * g + gx;
        for (let j = start[c]; j < start[c + 1]; j++) {
          const i = order[j];
          if (!this.visible(i)) continue;
          const dx = pos[2 * i] - wx, dy = pos[2 * i + 1] - wy, dd = dx * dx + dy * dy;
          if (dd <= bestD) { bestD = dd; best = i; }
        }
      }
    }
    return best;
  }

  hover(e) {
    if (!this.d || !this.panels) return;
    const at = this.locate(e);
    const i = at && this.viewStates[`p${at.p}`] ? this.nearest(at) : -1;
    if (i < 0) { this.tip.style.display = "none"; return; }
    const d = this.d, name = (c) => d.names[c] ?? String(c);
    const wrong = d.pred && d.pred[i] !== d.labels[i];
    let html = `<canvas width="96" height="96"></canvas>#${d.ids[i]} <span style="color:#888">(test position ${i})</span><br>label <b>${escapeHtml(name(d.labels[i]))}</b>`;
    if (d.pred) html += `<br>predicted <b style="color:${wrong ? "#d62728" : "#2ca02c"}">${escapeHtml(name(d.pred[i]))}</b>`;
    if (d.conf) html += `<br>confidence ${(100 * d.conf[i]).toFixed(0)}%`;
    this.tip.innerHTML = html;
    this.tip.dataset.index = String(i);
    if (this.bitmap) {
      const a = d.atlas, g = this.tip.querySelector("canvas").getContext("2d");
      g.imageSmoothingEnabled = false;
      g.drawImage(this.bitmap, (i % a.cols) * a.cell, Math.floor(i / a.cols) * a.cell, a.cell, a.cell, 0, 0, 96, 96);
    }
    const w = this.stage.clientWidth, h = this.stage.clientHeight;
    this.tip.style.display = "block";
    this.tip.style.left = Math.min(at.x + 14, w - 160) + "px";
    this.tip.style.top = Math.min(at.y + 14, h - 190) + "px";
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// The Streamlit component: one view per iframe, updated on every script run.
export function streamlit() {
  let view = null;
  const root = document.getElementById("root");
  connect((args) => {
    if (!view) view = mount(root, args, (value) => setComponentValue(value));
    else view.update(args);
    window.__points = view;
    setFrameHeight(root.getBoundingClientRect().height + 4);
  });
}
