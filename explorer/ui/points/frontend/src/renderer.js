// The WebGL2 renderer of the images-as-points view: every point is one GL_POINTS vertex
// (no instancing), drawn as a round dot or, zoomed in, as its own thumbnail sampled from the
// sprite atlas (cell = the point's index) inside a frame in its colour.
//
// Why not deck.gl (tried first: IconLayer + ScatterplotLayer over a pre-packed atlas, the
// natural library fit): on software WebGL (SwiftShader, headless Chromium --disable-gpu) its
// instanced layers cost ~22 µs per point per frame, 450 ms a frame for 20,000 dots on the
// 2-core CI machine, so 100,000 points would take seconds a frame; one GL_POINTS vertex a
// point costs ~2 µs. regl-scatterplot and deepscatter draw coloured points only, no per-point
// texture. So this file is the one hand-written shader pair; everything else is plain DOM.

const DIM = 0.15; // opacity of the points outside a selection

const VS = `#version 300 es
in vec2 aPos;      // world position
in vec4 aColor;    // point colour, alpha 0 = hidden
in float aIndex;   // the point's index = its atlas cell
uniform vec2 uScale, uOffset;  // world -> clip
uniform float uSize;           // point side in device px
uniform float uMode;           // 0 dots, 1 thumbnails
out vec4 vColor;
flat out float vIndex;
void main() {
  vColor = aColor;
  vIndex = aIndex;
  if (aColor.a == 0.0) { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); gl_PointSize = 0.0; return; }
  gl_Position = vec4(aPos * uScale + uOffset, 0.0, 1.0);
  gl_PointSize = uSize;
}`;

const FS = `#version 300 es
precision highp float;
in vec4 vColor;
flat in float vIndex;
uniform sampler2D uAtlas;
uniform float uMode, uOpacity, uCols, uFrame, uDim;  // uDim: 1, or less for unselected
uniform vec2 uCell;   // a cell's size in texture coordinates
out vec4 outColor;
void main() {
  vec2 q = gl_PointCoord;
  if (uMode < 0.5) {            // dot
    vec2 c = q * 2.0 - 1.0;
    if (dot(c, c) > 1.0) discard;
    outColor = vec4(vColor.rgb, uOpacity * uDim);
  } else {                      // thumbnail in a frame of its colour
    if (q.x < uFrame || q.y < uFrame || q.x > 1.0 - uFrame || q.y > 1.0 - uFrame) {
      outColor = vec4(vColor.rgb, uOpacity * uDim);
    } else {
      vec2 inner = (q - uFrame) / (1.0 - 2.0 * uFrame);
      vec2 cell = vec2(mod(vIndex, uCols), floor(vIndex / uCols));
      outColor = vec4(texture(uAtlas, (cell + inner) * uCell).rgb, uDim);
    }
  }
}`;

function compile(gl, type, src) {
  const s = gl.createShader(type);
  gl.shaderSource(s, src);
  gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
  return s;
}

export class Renderer {
  constructor(canvas) {
    const gl = canvas.getContext("webgl2", { antialias: false, premultipliedAlpha: false, preserveDrawingBuffer: false });
    if (!gl) throw new Error("this browser has no WebGL2");
    this.gl = gl;
    this.canvas = canvas;
    const p = gl.createProgram();
    gl.attachShader(p, compile(gl, gl.VERTEX_SHADER, VS));
    gl.attachShader(p, compile(gl, gl.FRAGMENT_SHADER, FS));
    gl.bindAttribLocation(p, 0, "aPos");
    gl.bindAttribLocation(p, 1, "aColor");
    gl.bindAttribLocation(p, 2, "aIndex");
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    this.program = p;
    this.u = {};
    for (const name of ["uScale", "uOffset", "uSize", "uMode", "uOpacity", "uCols", "uFrame", "uCell", "uAtlas", "uDim"]) {
      this.u[name] = gl.getUniformLocation(p, name);
    }
    this.maxPoint = gl.getParameter(gl.ALIASED_POINT_SIZE_RANGE)[1];
    this.maxTexture = gl.getParameter(gl.MAX_TEXTURE_SIZE);
    this.panels = [];
    this.texture = null;
    this.colorBuffer = gl.createBuffer();
    this.indexBuffer = gl.createBuffer();
    this.selectedBuffer = gl.createBuffer();
  }

  // Points in drawing order `order` (a permutation: drawing a prefix draws a random subset).
  setPoints(panelPositions, order) {
    const gl = this.gl, n = order.length;
    const index = new Float32Array(n);
    for (let s = 0; s < n; s++) index[s] = order[s];
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, index, gl.STATIC_DRAW);
    this.panels.forEach((p) => { gl.deleteBuffer(p.buffer); gl.deleteVertexArray(p.vao); });
    this.panels = panelPositions.map((pos) => {
      const slotted = new Float32Array(2 * n);
      for (let s = 0; s < n; s++) { slotted[2 * s] = pos[2 * order[s]]; slotted[2 * s + 1] = pos[2 * order[s] + 1]; }
      const buffer = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
      gl.bufferData(gl.ARRAY_BUFFER, slotted, gl.STATIC_DRAW);
      const vao = gl.createVertexArray();
      gl.bindVertexArray(vao);
      gl.enableVertexAttribArray(0);
      gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.colorBuffer);
      gl.enableVertexAttribArray(1);
      gl.vertexAttribPointer(1, 4, gl.UNSIGNED_BYTE, true, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
      gl.enableVertexAttribArray(2);
      gl.vertexAttribPointer(2, 1, gl.FLOAT, false, 0, 0);
      gl.bindVertexArray(null);
      return { buffer, vao };
    });
    this.n = n;
  }

  // Colours `(n, 4)` uint8 in drawing order.
  setColors(slottedRgba) {
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.colorBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, slottedRgba, gl.DYNAMIC_DRAW);
  }

  // The atlas image (ImageBitmap or canvas) with mipmaps; `cols` cells a row of `cell` px.
  setAtlas(image, cols, cell) {
    const gl = this.gl;
    if (this.texture) gl.deleteTexture(this.texture);
    const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, t);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, image);
    gl.generateMipmap(gl.TEXTURE_2D);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR_MIPMAP_LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    this.texture = t;
    this.atlas = { cols, cellU: cell / image.width, cellV: cell / image.height };
    this.textureBytes = Math.round((image.width * image.height * 4 * 4) / 3); // RGBA8 + mipmaps
  }

  // One frame. `views`: per panel {x, w (device px), scale (device px per world unit), cx, cy,
  // count (points to draw, a prefix of the drawing order), thumbs (bool), size (device px),
  // frame (fraction of the side), slots (Uint32Array of drawing slots to draw instead of a
  // prefix, or null)}; `selected`: Uint32Array of drawing slots of the selected points, drawn
  // last and in full while the others are dimmed (null: no selection).
  draw(views, opacity, selected) {
    const gl = this.gl, c = this.canvas;
    gl.viewport(0, 0, c.width, c.height);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.useProgram(this.program);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
    gl.enable(gl.SCISSOR_TEST);
    if (this.texture) {
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, this.texture);
      gl.uniform1i(this.u.uAtlas, 0);
      gl.uniform1f(this.u.uCols, this.atlas.cols);
      gl.uniform2f(this.u.uCell, this.atlas.cellU, this.atlas.cellV);
    }
    gl.uniform1f(this.u.uOpacity, opacity);
    views.forEach((v, p) => {
      const panel = this.panels[p];
      gl.viewport(v.x, 0, v.w, c.height);
      gl.scissor(v.x, 0, v.w, c.height);
      const sx = (2 * v.scale) / v.w, sy = (-2 * v.scale) / c.height;
      gl.uniform2f(this.u.uScale, sx, sy);
      gl.uniform2f(this.u.uOffset, -v.cx * sx, -v.cy * sy);
      gl.bindVertexArray(panel.vao);
      const thumbs = v.thumbs && this.texture;
      gl.uniform1f(this.u.uMode, thumbs ? 1 : 0);
      gl.uniform1f(this.u.uSize, Math.min(v.size, this.maxPoint));
      gl.uniform1f(this.u.uFrame, v.frame);
      const some = selected && selected.length;
      gl.uniform1f(this.u.uDim, some ? DIM : 1);
      this.drawSlots(v.slots, v.count);
      if (some) {
        gl.uniform1f(this.u.uDim, 1);
        this.drawSlots(selected, selected.length, this.selectedBuffer);
      }
    });
    gl.bindVertexArray(null);
    gl.disable(gl.SCISSOR_TEST);
  }

  drawSlots(slots, count, buffer = null) {
    const gl = this.gl;
    if (!slots) { gl.drawArrays(gl.POINTS, 0, count); return; }
    const b = buffer || (this.cullBuffer = this.cullBuffer || gl.createBuffer());
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, b);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, slots, gl.DYNAMIC_DRAW);
    gl.drawElements(gl.POINTS, count, gl.UNSIGNED_INT, 0);
  }
}
