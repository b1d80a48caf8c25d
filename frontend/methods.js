/**
 * The Methods view: a report card of one CAM step. A row per method and layer with what the step
 * stored (faithfulness with metrics=True, localization with regions=, each method's own time) and,
 * when a sanity check of the same tag exists (`<tag>/sanity`), the similarity of the maps after the
 * whole model was re-initialised. Sortable by any column; a click opens the CAM view on that row.
 */

import * as api from "./api.js";
import { el } from "./dom.js";
import { MEASURES, arrowed } from "./measures.js";
import { SeriesPicker } from "./picker.js";
import { Latest, loadChosenSample, loadSeriesSteps } from "./view.js";

const COLUMNS = [
  ...MEASURES,
  {
    key: "sanity",
    label: "Similarity after randomization",
    better: "lower",
    help: "Sanity check (add_sanity_check, tag <tag>/sanity): Spearman rank correlation of |map| between the " +
      "maps of the fully re-initialised model and the original maps. Near 1: the map does not depend on the model",
  },
  {
    key: "ms",
    label: "Own time (ms)",
    better: "lower",
    help: "This method's own work at this layer, after the forward pass and batched gradient all methods share",
  },
];

const picker = new SeriesPicker("mth-");
const latest = new Latest();
const state = { rows: [], sort: { key: null, ascending: true }, openCam: null, shown: null };

const ui = {
  table: el("table", { id: "mth-table", className: "report" }),
  note: el("div", { id: "mth-note", className: "caption" }),
  empty: el("div", { id: "mth-empty", className: "empty", hidden: true }),
};

export const notice = el("div", { id: "mth-notice", className: "notice", role: "status" });
export const node = el("section", { id: "methods-view", className: "view", hidden: true });

let sanitySeries = []; // the sanity series, to find the one of a CAM tag

export async function update(all) {
  const series = all.filter((s) => s.kind === "cam");
  sanitySeries = all.filter((s) => s.kind === "sanity");
  ui.empty.hidden = series.length > 0;
  picker.setSeries(series);
  await loadSteps();
}

function clear() {
  ui.table.replaceChildren();
  ui.note.textContent = "";
}

const loadSteps = () => loadSeriesSteps(picker, latest, { clear, show: showStep });

/**
 * The sanity check logged for a CAM series at its step, or the last one before it:
 * {step, header} or null. Its tag is the CAM tag + "/sanity", as CamMonitor(sanity_every=) writes it.
 */
async function sanityFor(run, tag, step) {
  const series = sanitySeries.find((s) => s.run === run && s.tag === `${tag}/sanity`);
  if (!series) return null;
  const { steps } = await api.listSteps(run, series.tag);
  const before = steps.filter((s) => s.step <= step).pop();
  if (!before) return null;
  const sample = await api.loadSample(run, series.tag, before.step);
  return sample.error ? null : { step: before.step, header: sample.header };
}

/** The rows of a CAM step: {method, layer, baseline, <column key>: number or undefined}. */
function rowsOf(header, sanity) {
  const rows = new Map();
  const row = (method, layer) => {
    const key = `${method}\u0000${layer}`;
    if (!rows.has(key)) rows.set(key, { method, layer, baseline: method === "random" });
    return rows.get(key);
  };
  for (const m of header.maps) row(m.method, m.layer);
  for (const record of header.metrics ?? []) {
    const target = row(record.method, record.layer);
    for (const { key } of MEASURES) if (typeof record[key] === "number") target[key] = record[key];
  }
  for (const t of header.timings ?? []) row(t.method, t.layer).ms = t.seconds * 1000;
  if (sanity?.header.mode === "cascading") { // its last stage is the whole model re-initialised
    for (const [method, measures] of Object.entries(sanity.header.measures)) {
      const values = measures.spearman_abs;
      const target = rows.get(`${method}\u0000${sanity.header.layer}`);
      if (target && values.length) target.sanity = values[values.length - 1];
    }
  }
  return [...rows.values()];
}

async function showStep() {
  const shown = await loadChosenSample(picker, latest);
  if (!shown) return;
  if (shown.error) throw shown.error;
  const { series, entry, sample, ticket } = shown;
  if (sample.error) {
    state.rows = [];
    ui.table.replaceChildren();
    ui.note.textContent = sample.error;
    ui.table.dataset.step = String(entry.step);
    return;
  }
  const sanity = await sanityFor(series.run, series.tag, entry.step);
  if (!latest.isCurrent(ticket)) return;
  state.rows = rowsOf(sample.header, sanity);
  state.shown = { run: series.run, tag: series.tag, step: entry.step };
  drawTable();
  ui.note.textContent = noteFor(sample.header, sanity, series.tag);
  ui.table.dataset.step = String(entry.step); // which step is shown (lets tests wait for it)
}

/** What the numbers rest on, and how to log the columns that are missing. */
function noteFor(header, sanity, tag) {
  const parts = [];
  if (header.pass_seconds != null) {
    parts.push(`Forward pass and batched gradient shared by all methods: ${(header.pass_seconds * 1000).toFixed(1)} ms.`);
  }
  if (sanity?.header.mode === "cascading") {
    parts.push(`Sanity check from step ${sanity.step}, layer ${sanity.header.layer}.`);
  } else if (sanity) {
    parts.push(`The sanity check at step ${sanity.step} re-initialised each module alone (independent): ` +
      "see the Checks view; the column needs a cascading check.");
  }
  const missing = [];
  if (!header.metrics?.some((r) => r.average_drop != null)) missing.push("add_cam(..., metrics=True) for faithfulness");
  if (!header.metrics?.some((r) => r.pointing_game != null)) missing.push("regions= (boxes or masks) for localization");
  if (!sanity) missing.push(`add_sanity_check(writer, "${tag}/sanity", ...) for the sanity column`);
  if (missing.length) parts.push(`Log more: ${missing.join("; ")}.`);
  return parts.join(" ");
}

const hasValue = (row, key) => typeof row[key] === "number";

/** The rows in the chosen order; rows without the sorted value go last, whatever the direction. */
function sorted() {
  const { key, ascending } = state.sort;
  if (!key) return state.rows;
  const text = key === "method" || key === "layer";
  return [...state.rows].sort((a, b) => {
    if (text) return (ascending ? 1 : -1) * String(a[key]).localeCompare(String(b[key]));
    if (!hasValue(a, key) || !hasValue(b, key)) return hasValue(b, key) - hasValue(a, key);
    return ascending ? a[key] - b[key] : b[key] - a[key];
  });
}

function sortBy(key, better) {
  const same = state.sort.key === key;
  state.sort = { key, ascending: same ? !state.sort.ascending : better !== "higher" };
  drawTable();
}

function drawTable() {
  const columns = COLUMNS.filter((c) => state.rows.some((r) => hasValue(r, c.key)));
  const best = new Map(columns.map((c) => {
    const values = state.rows.filter((r) => !r.baseline && hasValue(r, c.key)).map((r) => r[c.key]);
    return [c.key, values.length > 1 ? (c.better === "lower" ? Math.min(...values) : Math.max(...values)) : null];
  }));
  const heading = (key, text, help, better) => {
    const th = el("th", { textContent: text, title: help, dataset: { key } });
    if (state.sort.key === key) th.dataset.sorted = state.sort.ascending ? "ascending" : "descending";
    th.addEventListener("click", () => sortBy(key, better));
    return th;
  };
  const head = el("tr", {}, [
    heading("method", "Method", "CAM method (random: the baseline a method must beat)"),
    heading("layer", "Layer", "Layer the maps were computed at"),
    ...columns.map((c) => heading(c.key, arrowed(c), `${c.help} (${c.better} is better)`, c.better)),
  ]);
  const body = sorted().map((row) => {
    const cells = columns.map((c) => {
      const value = row[c.key];
      const td = el("td", { className: "number", dataset: { key: c.key } });
      if (hasValue(row, c.key)) {
        td.textContent = c.key === "ms" ? value.toFixed(2) : value.toFixed(3);
        td.dataset.value = String(value);
        if (value === best.get(c.key) && !row.baseline) td.classList.add("best");
      } else td.textContent = "–";
      return td;
    });
    const tr = el("tr", { className: row.baseline ? "baseline" : "", dataset: { method: row.method, layer: row.layer } }, [
      el("td", { textContent: row.baseline ? `${row.method} (baseline)` : row.method }),
      el("td", { textContent: row.layer || "(unnamed)" }),
      ...cells,
    ]);
    tr.title = "Open these maps in the CAM view";
    tr.addEventListener("click", () => state.openCam?.({ ...state.shown, method: row.method, layer: row.layer }));
    return tr;
  });
  ui.table.replaceChildren(el("thead", {}, [head]), el("tbody", {}, body));
}

/** Builds the view; `openCam({run, tag, step, method, layer})` shows a row's maps in the CAM view. */
export function mount({ onError, openCam }) {
  state.openCam = openCam;
  const guarded = (action) => () => action().catch(onError);
  ui.empty.append(
    el("h2", { textContent: "No class activation maps logged yet" }),
    el("pre", { textContent: 'add_cam(writer, "cam", model, images, methods=["gradcam", "layercam"], metrics=True)' }),
  );
  const bar = el("div", { className: "toolbar" }, [...picker.controls("add_cam")]);
  node.append(bar, notice, ui.empty, el("div", { className: "table-box" }, [ui.table]), ui.note);
  picker.wire(guarded(loadSteps), guarded(showStep));
}
