() => {
  // BioGPT Studio's keyboard fixes, run once when the page loads (ui.launch_options passes this file).
  // Gradio gives each radio option a name of its own, so every option is its own Tab stop and arrow
  // keys do nothing. One name per group gives the browser's own radio behaviour: one Tab stop per
  // group (the chosen option), arrow keys move and choose within it.
  let groups = 0;
  const nameRadios = () => {
    document.querySelectorAll(".block").forEach((block) => {
      const radios = block.querySelectorAll("input[type=radio]");
      if (!radios.length || block.querySelector(".block input[type=radio]") && block.querySelector(".block")) return;
      const name = block.dataset.radioGroup || (block.dataset.radioGroup = `studio-radio-${++groups}`);
      radios.forEach((radio) => { if (radio.name !== name) radio.setAttribute("name", name); });
    });
  };
  // Gradio's empty file and plot placeholders are divs named by aria-label with no role, which a screen
  // reader ignores (axe: aria-prohibited-attr); as images they are announced by that name.
  const nameRadiosAndPlaceholders = () => {
    nameRadios();
    document.querySelectorAll("div.empty[aria-label]:not([role])").forEach((d) => d.setAttribute("role", "img"));
    document.querySelectorAll(".js-plotly-plot").forEach((plot) => { fitSquareOnPhone(plot); namePlot(plot); });
  };
  // A heatmap with square cells (its y axis anchored to x) is drawn for a desktop's height; on a phone the
  // screen's width limits the square, which left white space under it: there its height follows its width.
  const fitSquare = (plot) => {
    const layout = plot._fullLayout;
    if (!layout || !layout.yaxis || layout.yaxis.scaleanchor !== "x" || window.innerWidth > 640 || !window.Plotly) return;
    const size = layout._size, wanted = Math.round(layout.xaxis._length + size.t + size.b);
    if (Math.abs(layout.height - wanted) > 8) window.Plotly.relayout(plot, { height: wanted });
  };
  function fitSquareOnPhone(plot) {
    if (plot.studioFitsSquare || !plot.on) return;
    plot.studioFitsSquare = true;
    plot.on("plotly_afterplot", () => fitSquare(plot));
    fitSquare(plot);
  }
  // A plotly chart is an SVG without a name: a screen reader heard nothing useful. Each drawing becomes one image
  // named by its figure's title (which changes with every redraw, also when the Attention heatmap is redrawn in
  // the page by Plotly.update) and described by the text beside it: its summary, its table. (The head heatmap that
  // a row of the head-roles table opens has no text of its own; the panel's explanation describes it.)
  const PLOT_DESCRIPTIONS = {
    "attention-plot": ["attention-summary"],
    "attribution-plot": ["attribution-summary"],
    "cls-chart": ["cls-info", "cls-table"],
    "zs-chart": ["zs-info", "zs-table"],
    "qa-plot": ["qa-info"],
    "teach-lesson-plot": ["teach-lesson-text", "teach-lesson-table"],
    "teach-roles-plot": ["teach-roles-intro", "teach-roles-table"],
    "teach-head-plot": ["teach-roles-intro"],
    "teach-plot-a": ["teach-compare-intro", "teach-alignment"],
    "teach-plot-b": ["teach-compare-intro", "teach-alignment"],
    "teach-plot-difference": ["teach-compare-intro", "teach-alignment"],
  };
  // The title as drawn, one line of it after another. Titles hold visitor tokens: only text is read, never markup.
  const plotTitle = (plot) => {
    const drawn = plot.querySelector(".gtitle");
    if (!drawn) return "";
    const lines = [...drawn.querySelectorAll("tspan.line")].map((line) => line.textContent);
    return (lines.length ? lines.join(" ") : drawn.textContent).replace(/\s+/g, " ").trim();
  };
  const setIfChanged = (element, name, value) => {
    if (element.getAttribute(name) !== value) element.setAttribute(name, value);
  };
  // The image is plotly's drawing (its first SVG), not the whole plot: the modebar beside it holds real buttons
  // (download, zoom, reset) that stay reachable. Its second SVG (title, colour bar, hover labels) repeats what
  // the name and the description say, so it is not read on its own.
  const describePlot = (plot) => {
    const [drawing, ...overlays] = plot.querySelectorAll(":scope > .plot-container > .svg-container > svg.main-svg");
    if (!drawing) return;
    const block = plot.closest(".block[id]");
    const label = block && block.querySelector("[data-testid=block-label]");
    setIfChanged(drawing, "role", "img");
    setIfChanged(drawing, "aria-label", plotTitle(plot) || (label && label.textContent.trim()) || "Plot");
    overlays.forEach((overlay) => setIfChanged(overlay, "aria-hidden", "true"));
    const ids = ((block && PLOT_DESCRIPTIONS[block.id]) || []).filter((id) => document.getElementById(id));
    if (ids.length) setIfChanged(drawing, "aria-describedby", ids.join(" "));
  };
  function namePlot(plot) {
    describePlot(plot);
    if (plot.studioNamed || !plot.on) return;
    plot.studioNamed = true;
    // Plotly.update and Plotly.relayout redraw the title without a new plot or a new Gradio value.
    for (const event of ["plotly_afterplot", "plotly_update", "plotly_relayout", "plotly_restyle"]) {
      plot.on(event, () => describePlot(plot));
    }
  }
  nameRadiosAndPlaceholders();
  new MutationObserver(nameRadiosAndPlaceholders).observe(document.body,
    { childList: true, subtree: true, attributes: true, attributeFilter: ["name"] });

  // Gradio's dropdown keeps its option list open when Tab moves focus away; Escape is the key it
  // closes the list on, so the list gets one when focus leaves its dropdown.
  document.addEventListener("focusout", (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || !input.closest(".block")) return;
    const block = input.closest(".block");
    if (!block.querySelector("[role=listbox]") || block.contains(event.relatedTarget)) return;
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
  }, true);

  // Tab lists follow the WAI-ARIA tabs pattern: arrow keys (and Home, End) move between the tabs of a
  // list, Enter or Space opens the focused one. Gradio's tab buttons answer only Tab and Enter.
  document.addEventListener("keydown", (event) => {
    const tab = event.target;
    if (!(tab instanceof HTMLElement) || tab.getAttribute("role") !== "tab") return;
    const tabs = [...tab.closest("[role=tablist]").querySelectorAll("[role=tab]")].filter((t) => t.offsetParent);
    const at = tabs.indexOf(tab);
    const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined || at < 0) return;
    event.preventDefault();
    tabs[(next + tabs.length) % tabs.length].focus();
  });
}
