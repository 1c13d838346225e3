// Images as points: every test image drawn as its own thumbnail at its 2-D embedding position.
//
// Level of detail: dots while a thumbnail would be under LOD_PX on screen, thumbnails (in a
// frame of the point's colour) from there on; zoomed in, only the points in view are drawn
// (a uniform grid culls them on the CPU). While the view moves, a random subset is drawn,
// sized to keep frames near 60 per second, and every point once it stops. Hover, box and
// lasso are computed on the CPU in world coordinates. The drawing is `renderer.js` (plain
// WebGL2: why not deck.gl is said there); the Streamlit protocol is `bridge.js`.

import { connect, setComponentValue, setFrameHeight } from "./bridge.js";
import { Renderer } from "./renderer.js";

const WORLD = 1000; // each panel's embedding is scaled to a WORLD x WORLD square
const LOD_PX = 10; // thumbnails from this on-screen size up, dots below
const FRAME = 0.07; // the coloured frame around a thumbnail, a fraction of its side
const MOVING_BUDGET = 2e6; // work a frame while moving, in pixels drawn (adapted to frame times)
const VERTEX_COST = 40; // a point's vertex work, in pixels
const IDLE_MS = 120; // every point is drawn this long after the view stops
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

// The atlas the Streamlit server serves (a "/media/..." path): resolved against the server root
// this component's page lives under (".../component/<name>/index.html"), so a base URL path works.
async function fetchAtlas(url) {
  const here = window.location.href, at = here.indexOf("/component/");
  const root = at >= 0 ? here.slice(0, at) : window.location.origin;
  const response = await fetch(/^https?:/.test(url) ? url : root + url);
  if (!response.ok) throw new Error(`the image atlas did not load (${response.status} ${url})`);
  return response.blob();
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
    atlas: { ...args.atlas, png: bytesOf(args.atlas_png), url: args.atlas_url || null },
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
    this.stage.style.cursor = "grab";
    const watch = new ResizeObserver(() => this.resize());
    watch.observe(this.stage);
    watch.observe(r); // the legend's height too, for the iframe's height
  }

  // New arguments (each script run): rebuild what changed, keep zoom, hidden classes, selection.
  update(args) {
    const d = decode(args);
    const same = this.d && this.d.dataId === d.dataId;
    const colorsChanged = !this.d || this.d.rgba.length !== d.rgba.length ||
      JSON.stringify(this.d.legend) !== JSON.stringify(d.legend) ||
      this.d.shown.some((v, i) => v !== d.shown[i]) || this.d.rgba.some((v, i) => v !== d.rgba[i]);
    const prev = this.d;
    if (prev && JSON.stringify(prev.legend) !== JSON.stringify(d.legend)) this.hidden.clear();
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
      this.thumbWorld = (0.9 * WORLD) / Math.sqrt(d.n); // a thumbnail's side at size 4
      if (!this.gl) this.createCanvas();
      // a fixed random drawing order: a prefix of it is a random subset of the points
      const order = new Uint32Array(d.n).map((_, i) => i);
      let seed = 1;
      for (let i = d.n - 1; i > 0; i--) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        const j = seed % (i + 1), t = order[i];
        order[i] = order[j]; order[j] = t;
      }
      this.order = order;
      this.slotOf = new Uint32Array(d.n);
      order.forEach((i, s) => { this.slotOf[i] = s; });
      this.gl.setPoints(this.panels.map((g) => g.pos), order);
      this.budget = MOVING_BUDGET;
      this.loadAtlas(d.atlas);
      this.fit();
    } else if (prev && JSON.stringify(prev.selected) !== JSON.stringify(d.selected)) {
      this.selected = Int32Array.from(d.selected.filter((i) => i >= 0 && i < d.n));
    }
    if (same && this.atlasFailed) this.loadAtlas(d.atlas); // e.g. fetched during a rerun: again
    if (!same || colorsChanged) this.recolor();
    this.sizeCtl.value = this.size;
    this.opacityCtl.value = this.opacity;
    this.render();
  }

  async loadAtlas(atlas) {
    const id = this.d.dataId;
    let bitmap;
    try {
      const blob = atlas.png ? new Blob([atlas.png], { type: "image/png" }) : await fetchAtlas(atlas.url);
      bitmap = await createImageBitmap(blob);
    } catch (e) { // the points still draw, as coloured frames; the next update tries again
      console.error(e);
      this.atlasFailed = this.d.dataId === id;
      return;
    }
    this.atlasFailed = false;
    if (this.d.dataId !== id) return; // newer data arrived while this atlas was loading
    this.bitmap = bitmap;
    const max = this.gl.maxTexture;
    let img = bitmap, cell = atlas.cell;
    if (bitmap.width > max || bitmap.height > max) { // this GPU's limit: shrink the grid uniformly
      const scale = max / Math.max(bitmap.width, bitmap.height);
      const c = new OffscreenCanvas(Math.floor(bitmap.width * scale), Math.floor(bitmap.height * scale));
      c.getContext("2d").drawImage(bitmap, 0, 0, c.width, c.height);
      img = c;
      cell *= scale;
    }
    this.gl.setAtlas(img, atlas.cols, cell);
    this.textureBytes = this.gl.textureBytes;
    this.hasAtlas = true;
    this.render();
  }

  createCanvas() {
    const canvas = document.createElement("canvas");
    canvas.style.cssText = "position:absolute;inset:0;width:100%;height:100%";
    this.stage.prepend(canvas);
    this.canvas = canvas;
    this.gl = new Renderer(canvas);
    this.stage.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    this.stage.addEventListener("dblclick", (e) => { const at = this.locate(e); if (at) this.zoomAt(at, 1); });
  }

  // Panel p's rectangle in CSS px, and the view: world centre (cx, cy) and zoom (log2 px a unit).
  rect(p) {
    const k = this.d.titles.length, w = this.stage.clientWidth / k;
    return { x: p * w, y: 0, w, h: this.stage.clientHeight };
  }

  unproject(p, x, y) { // CSS px in the stage -> world
    const r = this.rect(p), v = this.viewStates[`p${p}`], s = 2 ** v.zoom;
    return [v.cx + (x - r.x - r.w / 2) / s, v.cy + (y - r.y - r.h / 2) / s];
  }

  zoomAt(at, dz) {
    const v = this.viewStates[`p${at.p}`];
    const [wx, wy] = this.unproject(at.p, at.x, at.y);
    const zoom = Math.min(v.maxZoom, Math.max(v.minZoom, v.zoom + dz));
    const f = 2 ** (v.zoom - zoom); // keep the world point under the cursor in place
    this.setView(at.p, { ...v, zoom, cx: wx - (wx - v.cx) * f, cy: wy - (wy - v.cy) * f }, true);
  }

  wheel(e) {
    const at = this.locate(e);
    if (!at) return;
    e.preventDefault();
    this.zoomAt(at, -e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.002));
  }

  // A new view for panel p; `moving`: draw a subset now and everything once it stops.
  setView(p, view, moving = false) {
    this.viewStates = { ...this.viewStates, [`p${p}`]: view };
    this.render(moving);
  }

  fit() {
    const k = this.d.titles.length;
    const w = this.stage.clientWidth / k, h = this.d.height;
    const zoom = Math.log2(Math.max(1e-3, Math.min(w, h) / (WORLD * 1.06)));
    const vs = {};
    for (let p = 0; p < k; p++) vs[`p${p}`] = { cx: WORLD / 2, cy: WORLD / 2, zoom, minZoom: zoom - 2, maxZoom: zoom + 12 };
    this.viewStates = vs;
    this.fitWidth = w; // 0 while hidden: fit again once shown
    this.render();
  }

  resize() {
    if (!this.d) return;
    if (this.streamlit) setFrameHeight(this.root.getBoundingClientRect().height + 4);
    if (!this.fitWidth) this.fit();
    else this.render();
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
    const slotted = new Uint8Array(4 * d.n);
    for (let s = 0; s < d.n; s++) slotted.set(this.colors.subarray(4 * this.order[s], 4 * this.order[s] + 4), 4 * s);
    this.gl.setColors(slotted);
    if (d.legend.length !== this.legendSize) this.legendSize = d.legend.length;
  }

  thumbPx(p) {
    const vs = this.viewStates[`p${p}`];
    return vs ? this.thumbWorld * (this.size / 4) * 2 ** vs.zoom : 0;
  }

  // Draw at the next animation frame. `moving`: a random subset sized to the frame budget
  // (every point when it fits), then every point once the view has been still IDLE_MS.
  render(moving = false) {
    if (!this.gl || !this.d || !this.colors) return;
    this.moving = this.moving || moving;
    if (!moving) this.full = true;
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame((t) => this.frame(t));
    }
    clearTimeout(this.idle);
    if (moving) this.idle = setTimeout(() => this.render(false), IDLE_MS);
    this.updateStatus();
  }

  frame(t) {
    this.pending = false;
    const moving = this.moving && !this.full;
    this.moving = false;
    this.full = false;
    const dpr = window.devicePixelRatio || 1, c = this.canvas;
    const cw = Math.round(this.stage.clientWidth * dpr), ch = Math.round(this.stage.clientHeight * dpr);
    if (c.width !== cw || c.height !== ch) { c.width = cw; c.height = ch; }
    const k = this.d.titles.length, n = this.d.n;
    if (moving && this.lastFrame) { // adapt the subset to the time between frames
      const dt = t - this.lastFrame;
      if (dt > 24) this.budget = Math.max(3e5, this.budget * 0.7);
      else if (dt < 19) this.budget = Math.min(1e8, this.budget * 1.15);
    }
    this.lastFrame = moving ? t : 0;
    let drawnPoints = 0;
    const views = [];
    for (let p = 0; p < k; p++) {
      const r = this.rect(p), v = this.viewStates[`p${p}`];
      const px = this.thumbPx(p);
      const thumbs = this.hasAtlas && px >= LOD_PX;
      const side = (thumbs ? px : this.size) * dpr;
      const most = moving ? Math.max(24, Math.floor(this.budget / k / (VERTEX_COST + side * side))) : n;
      const slots = this.culled(p, r, v, most);
      const count = slots ? slots.length : Math.min(n, most);
      drawnPoints += count;
      views.push({
        x: Math.round(r.x * dpr), w: Math.round(r.w * dpr), scale: 2 ** v.zoom * dpr, cx: v.cx, cy: v.cy,
        thumbs, size: (thumbs ? px : this.size) * dpr, frame: FRAME, slots, count,
      });
    }
    const selected = this.selected.length ? this.selectedSlots() : null;
    this.gl.draw(views, this.opacity, selected);
    this.frames++;
    this.lastDrawn = drawnPoints;
    if (!this.firstFrameAt) this.firstFrameAt = performance.now(); // timings the benchmark reads
    if (this.hasAtlas && !this.atlasFrameAt) this.atlasFrameAt = performance.now();
  }

  // Drawing slots of the points inside panel p's view (with a margin), or null when most are
  // (then a prefix of the drawing order is drawn); at most `most`, a random subset beyond.
  culled(p, r, v, most) {
    const s = 2 ** v.zoom, half = Math.max(this.thumbPx(p), this.size) / s;
    const x0 = v.cx - r.w / 2 / s - half, x1 = v.cx + r.w / 2 / s + half;
    const y0 = v.cy - r.h / 2 / s - half, y1 = v.cy + r.h / 2 / s + half;
    if ((x1 - x0) * (y1 - y0) > 0.5 * WORLD * WORLD) return null;
    const { pos, grid } = this.panels[p];
    const { g, start, order } = grid;
    const c0 = Math.max(0, Math.floor((x0 / WORLD) * g)), c1 = Math.min(g - 1, Math.floor((x1 / WORLD) * g));
    const r0 = Math.max(0, Math.floor((y0 / WORLD) * g)), r1 = Math.min(g - 1, Math.floor((y1 / WORLD) * g));
    const out = [];
    for (let gy = r0; gy <= r1; gy++) {
      for (let gx = c0; gx <= c1; gx++) {
        const c = gy * g + gx;
        for (let j = start[c]; j < start[c + 1]; j++) {
          const i = order[j], x = pos[2 * i], y = pos[2 * i + 1];
          if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && this.colors[4 * i + 3]) out.push(this.slotOf[i]);
        }
      }
    }
    out.sort((a, b) => a - b); // drawing order: a prefix is a random subset
    return Uint32Array.from(out.length > most ? out.slice(0, most) : out);
  }

  selectedSlots() {
    if (this.selectedCache && this.selectedCache.sel === this.selected) return this.selectedCache.slots;
    const slots = new Uint32Array(this.selected.length);
    this.selected.forEach((i, j) => { slots[j] = this.slotOf[i]; });
    this.selectedCache = { sel: this.selected, slots };
    return slots;
  }

  updateStatus() {
    const shown = this.countVisible();
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
    this.stage.style.cursor = mode === "pan" ? "grab" : "crosshair";
    this.root.querySelectorAll("[data-mode]").forEach((b) => b.classList.toggle("on", b.dataset.mode === mode));
    this.render();
  }

  // Which panel a client point is over: {x, y} in stage CSS px and the panel p.
  locate(e) {
    if (!this.d || !this.viewStates.p0) return null;
    const rect = this.stage.getBoundingClientRect();
    const x = e.clientX - rect.left, y = e.clientY - rect.top;
    const k = this.d.titles.length, p = Math.floor((x / rect.width) * k);
    if (p < 0 || p >= k || y < 0 || y > rect.height) return null;
    return { x, y, p };
  }

  dragStart(e) {
    if (e.button !== 0) return;
    const at = this.locate(e);
    if (!at) return;
    if (this.mode === "pan") this.panning = { ...at, view: this.viewStates[`p${at.p}`] };
    else this.drag = { ...at, path: [[at.x, at.y]], add: e.shiftKey };
    this.stage.setPointerCapture?.(e.pointerId);
    e.preventDefault();
  }

  pointerMove(e) {
    if (this.panning) {
      const rect = this.stage.getBoundingClientRect(), a = this.panning, s = 2 ** a.view.zoom;
      const dx = e.clientX - rect.left - a.x, dy = e.clientY - rect.top - a.y;
      this.setView(a.p, { ...a.view, cx: a.view.cx - dx / s, cy: a.view.cy - dy / s }, true);
      this.tip.style.display = "none";
      return;
    }
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
    this.panning = null;
    if (!this.drag) return;
    const drag = this.drag;
    const poly = this.screenPolygon().map(([x, y]) => this.unproject(drag.p, x, y));
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
    const [wx, wy] = this.unproject(at.p, at.x, at.y);
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
    const i = at && this.colors ? this.nearest(at) : -1;
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
    if (!view) {
      view = mount(root, args, (value) => setComponentValue(value));
      view.streamlit = true;
    } else view.update(args);
    window.__points = view;
    setFrameHeight(root.getBoundingClientRect().height + 4);
  });
}
