(view, model, layer, head, aggregate, hideSink, minWeight, start, text, payload, plot, summary, request) => {
  // Redraws the Attention tab's heatmap in the page when only the head, "Show" (one head or the layer's
  // mean), "Hide the first-token sink" or "Hide weights below" changed: the numbers come from the layer
  // the server sent after its last heatmap (ui/attention_heatmap.py heatmap_payload), and the arithmetic is
  // Analysis.heatmap's, in float32, so the figure equals the server's bit for bit. Anything else goes to
  // the server: the last output is a request the tab's server event listens to. Returns [plot, summary, request].
  const started = performance.now();
  const toServer = () => [plot, summary, `${Date.now()}-${Math.random()}`];
  const p = payload;
  const hide = Boolean(hideSink) && p && p.length > 1;
  const headNumber = Number(head);
  if (!p || !p.maps || !plot || view !== "Heatmap" || !["head", "heads"].includes(aggregate) || text !== p.text
      || (model || "") !== p.model || Number(layer) !== Number(p.layer_value)
      || (p.start_value !== null && Number(start) !== Number(p.start_value))
      || !Number.isInteger(headNumber) || (p.pooled && Boolean(hideSink) !== p.hide)) {
    return toServer();
  }
  const h = Math.max(1, Math.min(p.heads, headNumber)) - 1;
  const index = aggregate === "head" ? h : p.heads;
  const frame = p.frames[String(p.pooled ? p.hide : hide)];
  const shown = document.querySelector("#attention-plot .js-plotly-plot");
  if (!frame || !shown || !window.Plotly) return toServer();

  const bytes = (b64) => Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)).buffer;
  const halfToFloat = (bits) => {  // IEEE 754 binary16 -> number, exactly
    const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  };
  const cache = (window.__studioHeatmap = window.__studioHeatmap || {});
  if (cache.id !== p.id) { cache.id = p.id; cache.maps = {}; cache.totals = {}; }
  const triangle = cache.maps[index] || (cache.maps[index] = (() => {
    const packed = p.maps[index];
    if (packed.dtype === "f4") return new Float32Array(bytes(packed.data));
    const halves = new Uint16Array(bytes(packed.data));
    const out = new Float32Array(halves.length);
    for (let i = 0; i < halves.length; i++) out[i] = halfToFloat(halves[i]);
    return out;
  })());
  const at = (row, col) => triangle[(row * (row + 1)) / 2 + col];  // lower triangle, row by row

  // The cells: rows and columns are the same tokens; NaN is a blank cell (the future, a threshold).
  const minimum = Math.fround(Number(minWeight) || 0);
  let side, value;
  if (p.pooled) {  // the payload's maps are already pooled (and the sink hidden if it was)
    side = Math.round((Math.sqrt(8 * triangle.length + 1) - 1) / 2);
    value = (r, c) => (c > r ? NaN : at(r, c));
  } else {
    const kept = hide ? Math.max(p.first, 1) : p.first;  // hiding the sink drops token #0's row and column
    side = p.last - kept;
    const offset = kept - p.first;
    const totals = hide && (cache.totals[index] || (cache.totals[index] = new Float32Array(bytes(p.totals[index]))));
    value = (r, c) => {
      if (c > r) return NaN;
      const weight = at(r + offset, c + offset);
      if (!hide) return weight;
      const total = totals[r + kept - Math.max(p.first, 1)];
      return total > 0 ? Math.fround(weight / total) : NaN;  // float32 division, as numpy's
    };
  }
  const z = new Float32Array(side * side);
  let top = -Infinity;
  for (let r = 0; r < side; r++) {
    for (let c = 0; c < side; c++) {
      let v = value(r, c);
      if (minimum > 0 && !(v >= minimum)) v = NaN;
      z[r * side + c] = v;
      if (Number.isFinite(v) && v > top) top = v;
    }
  }
  const notes = [];
  if (Boolean(hideSink) && p.length > 1) notes.push(p.hidden_note);
  if (p.geometry) notes.push(p.geometry);
  if (minimum > 0) notes.push(p.threshold_note.replace("{}", Number(minWeight).toFixed(2)));
  const what = aggregate === "head" ? p.what_head[h] : p.what_heads;

  const title = what + (notes.length ? p.notes_format.replace("{}", notes.join("; ")) : "");
  const trace = frame.data[0];
  // Straight into the plot Gradio drew: Plotly.update changes only the numbers, labels, title and height, which
  // costs half of what Gradio's redraw of a new value does (it parses the whole figure and Plotly.react's it).
  // Gradio's own value stays the server's last figure: the plot keeps its element across tab switches and
  // resizes, so nothing redraws that value, and the next figure from the server replaces both.
  // Labels and height change only with the sink toggle; leaving them out spares Plotly a new axis layout
  // (and keeps the height a phone fitted to its width, assets/studio.js).
  const rows = Array.from({length: side}, (_, r) => z.subarray(r * side, (r + 1) * side));
  const data = {z: [rows], zmax: [top === -Infinity || top === 0 ? 1 : top]};
  const layout = {"title.text": title};
  const labels = shown.data[0].x || [];
  if (labels.length !== trace.x.length || labels[0] !== trace.x[0]) {
    Object.assign(data, {x: [trace.x], y: [trace.y]});
    Object.assign(layout, {height: frame.layout.height, autosize: true});  // as Gradio lays out a new figure
  }
  window.Plotly.update(shown, data, layout);
  const ms = Math.max(1, Math.round(performance.now() - started));
  return [plot, `${p.summary} · redrawn in your browser in ${ms} ms`, request];
}
