/**
 * The Data set view: an evaluation logged by writer_ext.evaluate (kind "evaluation"). A table of each
 * method's means over the whole data set with 95% intervals (best per column marked, the random
 * baseline's row shown, sortable), the means per class for one metric, a histogram per metric for the
 * chosen row, and that row's worst and best images as CAM cards from the `<tag>/examples` CAM series
 * (a click opens it in the CAM view).
 */

import { el, labelled, setOptions } from "./dom.js";
import { decodeMap } from "./format.js";
import { blend, range, upsample } from "./maps.js";
import { MEASURES, arrowed } from "./measures.js";
import { SeriesPicker } from "./picker.js";
import { cssColor, onThemeChange } from "./theme.js";
import * as api from "./api.js";
import { Latest, loadChosenSample, loadSeriesSteps } from "./view.js";

const CARD = 112; // pixels a side of each image card
const HIST = { width: 240, height: 140 };

const picker = new SeriesPicker("ds-");
const latest = new Latest();
const state = { header: null, shown: null, row: 0, sort: { key: null, ascending: true }, openCam: null };

const ui = {
  table: el("table", { id: "ds-table", className: "report" }),
  metric: el("select", { id: "ds-metric" }),
  classes: el("table", { id: "ds-classes", className: "report" }),
  histograms: el("div", { id: "ds-histograms", className: "histograms" }),
  examples: el("div", { id: "ds-examples" }),
  note: el("div", { id: "ds-note", className: "caption" }),
  empty: el("div", { id: "ds-empty", className: "empty", hidden: true }),
};

export const notice = el("div", { id: "ds-notice", className: "notice", role: "status" });
export const node = el("section", { id: "dataset-view", className: "view", hidden: true });

export async function update(all) {
  const series = all.filter((s) => s.kind === "evaluation");
  ui.empty.hidden = series.length > 0;
  for (const part of [ui.bar, ui.table, ui.note, ui.histograms, ui.examples, ui.perClass, ui.classes]) part.hidden = series.length === 0;
  picker.setSeries(series);
  await loadSteps();
}

function clear() {
  state.header = null;
  for (const part of [ui.table, ui.classes, ui.histograms, ui.examples]) part.replaceChildren();
  ui.note.textContent = "";
}

const loadSteps = () => loadSeriesSteps(picker, latest, { clear, show: showStep });

async function showStep() {
  const shown = await loadChosenSample(picker, latest);
  if (!shown) return;
  if (shown.error) throw shown.error;
  const { series, entry, sample, ticket } = shown;
  if (sample.error) {
    state.header = null;
    for (const part of [ui.table, ui.classes, ui.histograms, ui.examples]) part.replaceChildren();
    ui.note.textContent = sample.error;
    ui.table.dataset.step = String(entry.step);
    return;
  }
  state.header = sample.header;
  state.shown = { run: series.run, tag: series.tag, step: entry.step };
  state.row = Math.min(state.row, sample.header.rows.length - 1);
  const measures = metricsOf(sample.header);
  setOptions(ui.metric, measures.map((m) => [m.key, m.label]), ui.metric.value || measures[0]?.key);
  drawTable();
  drawClasses();
  drawHistograms();
  await drawExamples(ticket);
  const h = sample.header;
  ui.note.textContent =
    `${h.count} images, ${h.targets === "label" ? "explaining each image's label" : "explaining the predicted class"}; ` +
    `means with 95% intervals; ${h.seconds.toFixed(1)} s (${(h.count / Math.max(h.seconds, 1e-9)).toFixed(1)} images/s). ` +
    `Worst and best images ranked by ${labelOf(h.rank_by)}.`;
  ui.table.dataset.step = String(entry.step); // which step is drawn (lets tests wait for it)
}

/** The header's metrics as measures (label, better direction, help); unknown names shown as they are. */
function metricsOf(header) {
  return header.metrics.map((key) => MEASURES.find((m) => m.key === key) ?? { key, label: key, better: "higher", help: key });
}

const labelOf = (key) => MEASURES.find((m) => m.key === key)?.label ?? String(key);
const rowName = (row, header) => (new Set(header.rows.map((r) => r.layer)).size > 1 ? `${row.method} @ ${row.layer}` : row.method);

/**
 * The best mean of a column among the methods, or null: with fewer than two methods, or when the best
 * does not beat the random baseline's `baseline` value (a tie with random is no best).
 */
function bestOf(values, better, baseline = null) {
  if (values.length < 2) return null;
  const best = better === "lower" ? Math.min(...values) : Math.max(...values);
  if (baseline != null && !(better === "lower" ? best < baseline : best > baseline)) return null;
  return best;
}

/** The baseline row's value of a measure, or null without a baseline. */
const baselineOf = (rows, key) => rows.find((r) => r.baseline)?.means[key] ?? null;

function sortedRows(header) {
  const rows = header.rows.map((row, index) => ({ row, index }));
  const { key, ascending } = state.sort;
  if (!key) return rows;
  if (key === "method") return rows.sort((a, b) => (ascending ? 1 : -1) * rowName(a.row, header).localeCompare(rowName(b.row, header)));
  return rows.sort((a, b) => (ascending ? 1 : -1) * (a.row.means[key] - b.row.means[key]));
}

function drawTable() {
  const header = state.header;
  const measures = metricsOf(header);
  const best = new Map(measures.map((m) => [m.key, bestOf(header.rows.filter((r) => !r.baseline).map((r) => r.means[m.key]),
    m.better, baselineOf(header.rows, m.key))]));
  const heading = (key, text, help, better) => {
    const th = el("th", { textContent: text, title: help, dataset: { key } });
    if (state.sort.key === key) th.dataset.sorted = state.sort.ascending ? "ascending" : "descending";
    th.addEventListener("click", () => {
      const same = state.sort.key === key;
      state.sort = { key, ascending: same ? !state.sort.ascending : better !== "higher" };
      drawTable();
    });
    return th;
  };
  const head = el("tr", {}, [
    heading("method", "Method", "CAM method and layer (random: the baseline a method must beat); click a row for its details"),
    ...measures.map((m) => heading(m.key, arrowed(m), `${m.help} (${m.better} is better; mean over the data set, 95% interval below)`, m.better)),
  ]);
  const body = sortedRows(header).map(({ row, index }) => {
    const cells = measures.map((m) => {
      const value = row.means[m.key];
      const [lo, hi] = row.intervals[m.key];
      const td = el("td", { className: "number", dataset: { key: m.key, value: String(value) } }, [
        el("span", { textContent: value.toFixed(3) }),
        el("span", { className: "interval", textContent: ` ${lo.toFixed(3)}–${hi.toFixed(3)}` }),
      ]);
      td.title = `95% interval ${lo.toFixed(4)} to ${hi.toFixed(4)}`;
      if (!row.baseline && value === best.get(m.key)) td.classList.add("best");
      return td;
    });
    const tr = el("tr", { className: row.baseline ? "baseline" : "", dataset: { method: row.method, layer: row.layer } }, [
      el("td", { textContent: row.baseline ? `${rowName(row, header)} (baseline)` : rowName(row, header) }),
      ...cells,
    ]);
    if (index === state.row) tr.classList.add("selected");
    tr.addEventListener("click", () => {
      state.row = index;
      drawTable();
      drawHistograms();
      drawExamples(latest.ticket).catch((error) => (notice.textContent = `Error: ${error.message}`));
    });
    return tr;
  });
  ui.table.replaceChildren(el("thead", {}, [head]), el("tbody", {}, body));
}

/** One row per class, one column per method: the chosen metric's mean over that class's images. */
function drawClasses() {
  const header = state.header;
  const measure = metricsOf(header).find((m) => m.key === ui.metric.value) ?? metricsOf(header)[0];
  const head = el("tr", {}, [
    el("th", { textContent: "Class" }),
    el("th", { textContent: "Images" }),
    ...header.rows.map((row) => el("th", { textContent: row.baseline ? `${rowName(row, header)} (baseline)` : rowName(row, header) })),
  ]);
  const body = header.classes.map((c) => {
    const values = c.means.map((m) => m[measure.key]);
    const random = values.find((_, r) => header.rows[r].baseline) ?? null;
    const best = bestOf(values.filter((_, r) => !header.rows[r].baseline), measure.better, random);
    return el("tr", { dataset: { classId: String(c.class_id) } }, [
      el("td", { textContent: c.class_name ?? `class ${c.class_id}` }),
      el("td", { className: "number", textContent: String(c.count) }),
      ...values.map((v, r) => {
        const td = el("td", { className: "number", textContent: v.toFixed(3), dataset: { value: String(v) } });
        if (!header.rows[r].baseline && v === best) td.classList.add("best");
        return td;
      }),
    ]);
  });
  ui.classes.replaceChildren(el("caption", { textContent: `${arrowed(measure)} per class (the label's class)` }),
    el("thead", {}, [head]), el("tbody", {}, body));
}

/** A histogram of the chosen row's per-image values for each metric (bins over its range, 0 to 1 unless the
 * measure says), with a count axis. */
function drawHistograms() {
  const header = state.header;
  const row = header.rows[state.row];
  const [left, bottom, top, right] = [34, 30, 8, 8];
  ui.histograms.replaceChildren(...metricsOf(header).map((m) => {
    const counts = row.histograms[m.key];
    const canvas = el("canvas", { width: HIST.width, height: HIST.height, dataset: { key: m.key } });
    const context = canvas.getContext("2d");
    const most = Math.max(...counts, 1);
    const plotW = HIST.width - left - right;
    const plotH = HIST.height - top - bottom;
    const bar = plotW / counts.length;
    const base = HIST.height - bottom;
    context.fillStyle = cssColor(row.baseline ? "--bar-muted" : "--bar");
    counts.forEach((n, i) => {
      const h = (plotH * n) / most;
      context.fillRect(left + i * bar, base - h, Math.max(bar - 1, 1), h);
    });
    context.strokeStyle = cssColor("--axis");
    context.beginPath();
    context.moveTo(left, top);
    context.lineTo(left, base);
    context.lineTo(left + plotW, base);
    context.stroke();
    context.fillStyle = cssColor("--axis");
    context.font = "11px Roboto, system-ui, sans-serif";
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (const n of [0, most]) context.fillText(String(n), left - 4, base - (plotH * n) / most);
    context.textAlign = "center";
    context.textBaseline = "top";
    const [low, high] = [m.low ?? 0, m.high ?? 1];
    context.fillText(String(low), left, base + 3);
    context.fillText(String(high), left + plotW, base + 3);
    context.fillText(m.label, left + plotW / 2, base + 15);
    context.save();
    context.translate(2, top + plotH / 2);
    context.rotate(-Math.PI / 2);
    context.fillText("images", 0, 0);
    context.restore();
    canvas.title = `${m.label} of ${rowName(row, header)}: ${counts.join(", ")} images per bin of ${((high - low) / counts.length).toFixed(2)} from ${low}`;
    return el("figure", { className: "histogram" }, [canvas, el("figcaption", { textContent: `${m.label} (${rowName(row, header)})` })]);
  }));
}

/** One kept image with the row's map over it; a click opens the examples series in the CAM view. */
async function card(sample, kept, row, caption) {
  const canvas = el("canvas", { width: CARD, height: CARD });
  const context = canvas.getContext("2d");
  const picture = await sample.image(kept.image);
  if (picture) context.drawImage(picture, 0, 0, CARD, CARD);
  const entry = sample.header.maps.find((m) => m.image === kept.image && m.method === row.method && m.layer === row.layer);
  if (entry) {
    const values = upsample(decodeMap(sample.maps, entry), entry.height, entry.width, CARD, CARD, "bilinear");
    const [lo, hi] = range(values);
    const pixels = context.getImageData(0, 0, CARD, CARD);
    blend(pixels.data, values, { lo, hi, colormap: "jet", opacity: 0.5 });
    context.putImageData(pixels, 0, 0);
  }
  const target = sample.header.images[kept.image]?.targets?.[0];
  const explained = state.header.targets === "label" ? "label" : "prediction";
  const figure = el("figure", { className: "card thumb", dataset: { index: String(kept.index), value: String(kept.value) } }, [
    canvas,
    el("figcaption", { textContent: `${caption} #${kept.index}: ${kept.value.toFixed(3)}` }),
    el("figcaption", { className: "explained", textContent: `${explained}: ${target?.class_name ?? `class ${kept.class_id}`}` }),
  ]);
  figure.title = "Open in the CAM view";
  figure.addEventListener("click", () =>
    state.openCam?.({ run: state.shown.run, tag: `${state.shown.tag}/examples`, step: state.shown.step, method: row.method, layer: row.layer }));
  return figure;
}

async function drawExamples(ticket) {
  const header = state.header;
  const row = header.rows[state.row];
  if (!row.worst?.length && !row.best?.length) {
    ui.examples.replaceChildren(el("p", { className: "caption", textContent: row.baseline ? "No images are kept for the baseline." : "No images kept (worst=0)." }));
    return;
  }
  const sample = await api.loadSample(state.shown.run, `${state.shown.tag}/examples`, state.shown.step);
  if (!latest.isCurrent(ticket)) return;
  if (sample.error) {
    ui.examples.replaceChildren(el("p", { className: "damaged", textContent: sample.error }));
    return;
  }
  const strip = async (name, kept) => el("div", { className: "strip", dataset: { side: name } }, [
    el("div", { className: "caption", textContent: `${name} for ${rowName(row, header)} by ${labelOf(header.rank_by)}` }),
    el("div", { className: "filmstrip" }, await Promise.all(kept.map((k) => card(sample, k, row, name)))),
  ]);
  const parts = await Promise.all([strip("Worst", row.worst ?? []), strip("Best", row.best ?? [])]);
  if (latest.isCurrent(ticket)) ui.examples.replaceChildren(...parts);
}

/** Builds the view; `openCam({run, tag, step, method, layer})` shows the kept images in the CAM view. */
export function mount({ onError, openCam }) {
  state.openCam = openCam;
  const guarded = (action) => () => action().catch(onError);
  ui.empty.append(
    el("h2", { textContent: "No data-set evaluations logged yet" }),
    el("p", { textContent: "This view scores each method's maps over a whole data set against a random " +
      "baseline. Log an evaluation with:" }),
    el("pre", { textContent: 'writer_ext.evaluate(model, dataset, methods=("gradcam", "layercam"), writer=writer)\n' +
      "tensorboard-cam eval --model torchvision:resnet18 --weights ckpt.pt --data val/ --logdir runs/eval" }),
  );
  ui.bar = el("div", { className: "toolbar" }, [...picker.controls("evaluate")]);
  ui.perClass = el("div", { className: "toolbar" }, [labelled("Per class", ui.metric, "The metric the per-class table shows")]);
  node.append(ui.bar, notice, ui.empty, el("div", { className: "table-box" }, [ui.table]), ui.note, ui.histograms,
    ui.examples, ui.perClass, el("div", { className: "table-box" }, [ui.classes]));
  picker.wire(guarded(loadSteps), guarded(showStep));
  ui.metric.addEventListener("change", () => state.header && drawClasses());
  onThemeChange(() => state.header && drawHistograms());
}
