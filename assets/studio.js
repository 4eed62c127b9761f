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
    document.querySelectorAll(".js-plotly-plot").forEach(fitSquareOnPhone);
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
