async (mode, view, model, layer, head, aggregate, hideSink, minWeight, start, text, payload, plot, summary, request,
 layerRequest) => {
  // Redraws the Attention tab's heatmap in the page when only the layer, the head, "Show" (one head or the
  // layer's mean), "Hide the first-token sink" or "Hide weights below" changed: the numbers come from the layer
  // the server sent (ui/attention_heatmap.py heatmap_payload), and the arithmetic is Analysis.heatmap's, in
  // float32, so the figure equals the server's bit for bit.
  // `mode` "control": a control changed. If the page holds that layer it redraws; if it holds another layer
  // of the same heatmap it asks the server for this one (layerRequest), which arrives as a new payload; for
  // anything else it asks the server to draw the view (request).
  // `mode` "arrival": a payload came. The page draws it when it answers its own layerRequest and still fits
  // the controls; otherwise a newer request or a server drawing is on its way, and it does nothing.
  // Returns [plot, summary, request, layerRequest]; a changed request is what the server's events listen to.
  const started = performance.now();
  // A request names the controls it is for, so asking again for what was just asked is no change (no event).
  const textKey = Array.from(String(text || "")).reduce((h, ch) => Math.imul(h ^ ch.codePointAt(0), 16777619), 2166136261);
  const controls = [view, model, layer, head, aggregate, hideSink, minWeight, start, textKey >>> 0].join("|");
  const unchanged = [plot, summary, request, layerRequest];
  // Controls set together (a link being opened sets them all) each run this handler at once, every one with
  // the request as it was: only the last of them asks, or Gradio would queue one request each (its
  // trigger_mode="always_last" holds back a second request only once the first has been sent).
  const ask = async (requests) => {
    const ticket = (window.__studioRedrawTicket = (window.__studioRedrawTicket || 0) + 1);
    await new Promise((resolve) => setTimeout(resolve, 0));
    return ticket === window.__studioRedrawTicket ? [plot, summary, ...requests] : unchanged;
  };
  const toServer = () => (mode === "control" ? ask([`view|${controls}`, layerRequest]) : unchanged);
  const p = payload;
  const hide = Boolean(hideSink) && p && p.length > 1;
  const headNumber = Number(head);
  if (!p || !p.maps || !plot || view !== "Heatmap" || !["head", "heads"].includes(aggregate) || text !== p.text
      || (model || "") !== p.model || (p.start_value !== null && Number(start) !== Number(p.start_value))
      || !Number.isInteger(headNumber) || (p.pooled && Boolean(hideSink) !== p.hide)) {
    return toServer();
  }
  if (Number(layer) !== Number(p.layer_value)) {  // the same heatmap of another layer: the server sends that layer
    return mode === "control" ? ask([request, `layer|${controls}`]) : unchanged;
  }
  if (mode === "arrival" && !p.draw) return unchanged;  // the layer of a heatmap the server drew itself
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
  return [plot, `${p.summary} · redrawn in your browser in ${ms} ms`, request, layerRequest];
}
