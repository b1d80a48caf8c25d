/**
 * The sidebar, as in TensorBoard's own tabs: settings (the card size) and the run list (a checkbox and
 * the run's colour chip per run, a regex filter, "toggle all"), with the regex tag filter shown above
 * the views. The views show only the series of ticked runs whose tags match (`visible`); each run keeps
 * one colour from TensorBoard's run palette (`colourOf`), used on its cards.
 */

import { el } from "./dom.js";
import { current as theme, onThemeChange } from "./theme.js";

/** TensorBoard's default run colour palette (its "Defalt" palette: light and dark hex per colour). */
const PALETTE = [
  ["#425066", "#8e98a3"],
  ["#12b5cb", "#12b5cb"],
  ["#e52592", "#e52592"],
  ["#f9ab00", "#f9ab00"],
  ["#9334e6", "#9334e6"],
  ["#7cb342", "#7cb342"],
  ["#e8710a", "#e8710a"],
];

const state = { runs: [], unticked: new Set(), listeners: [] };

const ui = {
  runFilter: el("input", { id: "run-filter", type: "search", placeholder: "Filter runs (regex)", spellcheck: false }),
  tagFilter: el("input", { id: "tag-filter", type: "search", placeholder: "Filter tags (regex)", spellcheck: false }),
  toggleAll: el("input", { id: "toggle-all", type: "checkbox", title: "Tick or untick every run shown" }),
  list: el("ul", { id: "run-list", className: "run-list" }),
  cardSize: el("input", { id: "card-size", type: "range", min: "120", max: "640", step: "20", value: "240" }),
  cardSizeLabel: el("span", { className: "setting-value" }),
};

/** A run's colour: TensorBoard's palette in order of the sorted run names (the dark variant in the dark theme). */
export function colourOf(run) {
  const index = state.runs.indexOf(run);
  if (index < 0) return "transparent";
  return PALETTE[index % PALETTE.length][theme() === "dark" ? 1 : 0];
}

/** A regex from a filter box, or null for an empty box; an invalid pattern marks the box and matches all. */
function pattern(input) {
  input.classList.remove("invalid");
  input.title = "";
  if (!input.value) return null;
  try {
    return new RegExp(input.value, "i");
  } catch (error) {
    input.classList.add("invalid");
    input.title = `Not a regular expression: ${error.message}`;
    return null;
  }
}

/** The runs the run filter lets through. */
function filtered() {
  const re = pattern(ui.runFilter);
  return state.runs.filter((run) => !re || re.test(run));
}

/** The series the views show: ticked runs passing the run filter, tags passing the tag filter. */
export function visible(series) {
  const runs = new Set(filtered().filter((run) => !state.unticked.has(run)));
  const tags = pattern(ui.tagFilter);
  return series.filter((s) => runs.has(s.run) && (!tags || tags.test(s.tag)));
}

/** Calls `listener()` after the ticks or filters change. */
export function onChange(listener) {
  state.listeners.push(listener);
}

function changed() {
  drawList();
  for (const listener of state.listeners) listener();
}

function drawList() {
  const shown = filtered();
  ui.list.replaceChildren(
    ...shown.map((run) => {
      const box = el("input", { type: "checkbox", checked: !state.unticked.has(run), dataset: { run } });
      box.addEventListener("change", () => {
        if (box.checked) state.unticked.delete(run);
        else state.unticked.add(run);
        changed();
      });
      const chip = el("span", { className: "run-chip" });
      chip.style.background = colourOf(run);
      return el("li", { className: "run-item" }, [
        el("label", { title: run }, [box, chip, el("span", { className: "run-name", textContent: run })]),
      ]);
    }),
  );
  const ticked = shown.filter((run) => !state.unticked.has(run)).length;
  ui.toggleAll.checked = shown.length > 0 && ticked === shown.length;
  ui.toggleAll.indeterminate = ticked > 0 && ticked < shown.length;
  if (!shown.length) {
    const text = state.runs.length ? "No run matches the filter." : "No runs yet.";
    ui.list.append(el("li", { className: "run-none", textContent: text }));
  }
}

/** Takes the runs of the listed series (keeping what was unticked). */
export function setSeries(series) {
  state.runs = [...new Set(series.map((s) => s.run))].sort();
  drawList();
}

function setCardSize() {
  document.documentElement.style.setProperty("--card-size", `${ui.cardSize.value}px`);
  ui.cardSizeLabel.textContent = `${ui.cardSize.value} px`;
}

/** The sidebar element and the tag filter box; call once. */
export function mount() {
  ui.runFilter.addEventListener("input", changed);
  ui.tagFilter.addEventListener("input", changed);
  ui.toggleAll.addEventListener("change", () => {
    for (const run of filtered()) {
      if (ui.toggleAll.checked) state.unticked.delete(run);
      else state.unticked.add(run);
    }
    changed();
  });
  ui.cardSize.addEventListener("input", setCardSize);
  setCardSize();
  onThemeChange(drawList);
  const sidebar = el("aside", { id: "sidebar", className: "sidebar" }, [
    el("section", { className: "sidebar-section" }, [
      el("h3", { textContent: "Settings" }),
      el("label", { className: "setting", title: "The smallest width of a card; cards grow to fill the row" }, [
        el("span", { textContent: "Card size" }),
        ui.cardSize,
        ui.cardSizeLabel,
      ]),
    ]),
    el("section", { className: "sidebar-section runs" }, [
      el("h3", { textContent: "Runs" }),
      ui.runFilter,
      el("label", { className: "toggle-all" }, [ui.toggleAll, el("span", { textContent: "Toggle all runs" })]),
      ui.list,
    ]),
  ]);
  return { sidebar, tagFilter: ui.tagFilter };
}
