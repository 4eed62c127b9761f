async (mode, payload, view, model, layer, head, aggregate, hideSink, minWeight, start, text, summary, request,
 layerRequest) => {
  // Redraws the Attention tab's heatmap in the page when only the layer, the head, "Show" (one head or the
  // layer's mean), "Hide the first-token sink" or "Hide weights below" changed: the numbers come from the layer
  // the server sent (ui/attention_heatmap.py heatmap_payload), and the arithmetic is Analysis.heatmap's, in
  // float32, so the figure equals the server's bit for bit.
  // `mode` "control": a control changed. If the page holds that layer it redraws. If it holds another layer of
  // the same heatmap it fetches that layer (ui/layer_route.py) and draws it; when the route cannot answer, it
  // asks the tab's Gradio event for the layer (layerRequest), which comes back as a payload. For anything
  // else it asks the server to draw the view (request).
  // `mode` "arrival": Gradio brought a payload (`payload`, JSON text; a control's handler gets null and uses
  // the last one). The page draws it when it answers a layerRequest and still fits the controls.
  // Returns [summary, request, layerRequest], undefined where nothing changes (Gradio then leaves it alone);
  // a changed request is what the server's events listen to. Neither the payload nor the plot's figure is an
  // input: Gradio copies every input of a handler, object by object. The layer is fetched, not asked of a Gradio
  // event: each backend event cost the page 70-170 ms of its own work (loading statuses of every component).
  const started = performance.now();
  const cache = (window.__studioHeatmap = window.__studioHeatmap || {});
  if (mode === "arrival") cache.payload = payload ? JSON.parse(payload) : null;
  // A request names the controls it is for, so asking again for what was just asked is no change (no event).
  // Built only when the page asks (it hashes the whole text), not for a redraw in the page.
  const requestFor = (kind) => {
    const textKey = Array.from(String(text || "")).reduce((h, ch) => Math.imul(h ^ ch.codePointAt(0), 16777619), 2166136261);
    return [kind, view, model, layer, head, aggregate, hideSink, minWeight, start, textKey >>> 0].join("|");
  };
  // Controls set together (a link being opened sets them all) each run this handler at once: only the last
  // of them may ask, or Gradio would queue one request each (its trigger_mode="always_last" holds back a
  // second request only once the first has been sent). A layer being fetched is overtaken the same way.
  const turn = () => (cache.turn = (cache.turn || 0) + 1);
  const ask = async (viewRequest, layerRequestValue) => {
    const mine = turn();
    await new Promise((resolve) => setTimeout(resolve, 0));
    return mine === cache.turn ? [undefined, viewRequest, layerRequestValue] : [];
  };
  if (mode === "arrival" && !(cache.payload && cache.payload.draw)) return [];  // the layer of a heatmap the server drew
  const p = cache.payload;
  const shown = document.querySelector("#attention-plot .js-plotly-plot");
  const sameHeatmap = p && p.maps && shown && shown.data && window.Plotly && view === "Heatmap"
    && ["head", "heads"].includes(aggregate) && text === p.text && (model || "") === p.model
    && (p.start_value === null || Number(start) === Number(p.start_value)) && Number.isInteger(Number(head))
    && !(p.pooled && Boolean(hideSink) !== p.hide);
  if (mode === "arrival") return sameHeatmap && Number(layer) === Number(p.layer_value) ? draw(p) : [];
  if (!sameHeatmap) return ask(requestFor("view"), undefined);
  if (Number(layer) === Number(p.layer_value)) return draw(p);
  // The same heatmap of another layer: fetch that layer alone and draw it.
  const mine = turn(), held = p;
  const route = new URL("studio/attention-layer", window.location.href.split(/[?#]/)[0].replace(/[^/]*$/, ""));
  const body = JSON.stringify({text, controls: {view, model, layer: Number(layer), aggregate, hide_sink: Boolean(hideSink),
                                                start: Number(start)}});
  const fetched = await fetch(route, {method: "POST", headers: {"Content-Type": "application/json"}, body})
    .then((answer) => (answer.status === 200 ? answer.json() : null)).catch(() => null);
  if (mine !== cache.turn) return [];  // a later change answers
  // The server sent a payload meanwhile (an analysis of a new text drawn while this layer was on its way): the
  // fetched layer may no longer be what the plot shows, so the server draws what the controls show now.
  if (cache.payload !== held) return ask(requestFor("view"), undefined);
  if (!fetched) return ask(undefined, requestFor("layer"));  // busy, or not drawable: through the queue
  cache.payload = fetched;
  return draw(fetched);

  function draw(p) {
    const hide = Boolean(hideSink) && p.length > 1;
    const headNumber = Number(head);
    const h = Math.max(1, Math.min(p.heads, headNumber)) - 1;
    const index = aggregate === "head" ? h : p.heads;
    const frame = p.frame;

    const bytes = (b64) => Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)).buffer;
    const halfToFloat = (bits) => {  // IEEE 754 binary16 -> number, exactly
      const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
      if (exponent === 0) return sign * fraction * 2 ** -24;
      if (exponent === 31) return fraction ? NaN : sign * Infinity;
      return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
    };
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
      side = p.last - p.first;
      const kept = Math.max(p.first, 1);  // the first row a hidden sink renormalises: totals[0] is its total
      const totals = hide && (cache.totals[index] || (cache.totals[index] = new Float32Array(bytes(p.totals[index]))));
      value = (r, c) => {
        if (c > r) return NaN;
        if (!hide) return at(r, c);
        if (r + p.first === 0 || c + p.first === 0) return NaN;  // a hidden sink is a blank row and column
        const total = totals[r + p.first - kept];
        return total > 0 ? Math.fround(at(r, c) / total) : NaN;  // float32 division, as numpy's
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
    if (hide) notes.push(p.hidden_note);
    if (p.geometry) notes.push(p.geometry);
    if (minimum > 0) notes.push(p.threshold_note.replace("{}", Number(minWeight).toFixed(2)));
    const what = aggregate === "head" ? p.what_head[h] : p.what_heads;

    const title = what + (notes.length ? p.notes_format.replace("{}", notes.join("; ")) : "");
    const trace = frame.data[0];
    // Straight into the plot Gradio drew: Plotly.update changes only the numbers, labels, title and height, which
    // costs half of what Gradio's redraw of a new value does (it parses the whole figure and Plotly.react's it).
    // Gradio's own value stays the server's last figure: the plot keeps its element across tab switches and
    // resizes, so nothing redraws that value, and the next figure from the server replaces both.
    // Labels and height are the plot's already (the layer, the head and both toggles keep them); leaving them out
    // spares Plotly a new axis layout (and keeps the height a phone fitted to its width, assets/studio.js).
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
    return [`${p.summary} · redrawn in your browser in ${ms} ms`];
  }
}
