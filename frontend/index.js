/**
 * The "Activations & CAM" tab. TensorBoard imports this module inside the
 * tab's iframe and calls `render()` once.
 *
 * Every string that comes from logs (runs, tags, class names, errors) is set
 * with textContent; nothing is loaded from outside the plugin's own routes.
 */

import * as activations from "./activations.js";
import * as api from "./api.js";
import { COLORMAPS } from "./colormaps.js";
import { el, labelled, setOptions } from "./dom.js";
import { onDataReloaded } from "./host.js";
import { SeriesPicker } from "./picker.js";
import { bilinear, blend, decodeMap, range } from "./maps.js";
import * as model from "./model.js";

const picker = new SeriesPicker("");
const state = {
  current: null, // the shown sample: {header, maps, images}
  token: 0,
};

const VIEWS = [
  ["cam", "CAM"],
  ["activations", "Activations"],
  ["model", "Model"],
];

const ui = {
  views: VIEWS.map(([name, text]) =>
    el("button", { id: `view-${name}`, type: "button", className: "view-button", textContent: text, dataset: { view: name } }),
  ),
  camView: el("section", { id: "cam-view", className: "view" }),
  method: el("select", { id: "method" }),
  layer: el("select", { id: "layer" }),
  target: el("select", { id: "target" }),
  colormap: el("select", { id: "colormap" }),
  opacity: el("input", { id: "opacity", type: "range", min: "0", max: "1", step: "0.05", value: "0.5" }),
  refresh: el("button", { id: "refresh", type: "button", textContent: "Refresh", title: "Reload runs, tags and steps" }),
  notice: el("div", { id: "notice", className: "notice", role: "status" }),
  metrics: el("div", {
    id: "metrics",
    className: "metrics",
    title: "Faithfulness of the shown method at this layer (add_cam(..., metrics=True)), random-map baseline in brackets",
  }),
  grid: el("div", { id: "grid", className: "grid" }),
  empty: el("div", { id: "empty", className: "empty", hidden: true }),
};

function buildEmptyState() {
  ui.empty.append(
    el("h2", { textContent: "No class activation maps logged yet" }),
    el("p", { textContent: "Log some from your training script, then refresh:" }),
    el("pre", {
      textContent:
        'from writer_ext import SummaryWriter\nSummaryWriter("runs/exp").add_cam("cam", model, images, global_step=step)',
    }),
  );
}

/** Shows one view ("cam", "activations" or "model") and marks its button. */
function showView(name) {
  const sections = { cam: ui.camView, activations: activations.node, model: model.node };
  for (const [view, section] of Object.entries(sections)) section.hidden = view !== name;
  for (const button of ui.views) button.classList.toggle("active", button.dataset.view === name);
}

/** Opens the CAM view on a run and, when its samples have it, a layer (the Model view's links). */
async function openCam(run, layer) {
  showView("cam");
  if (!picker.series.some((s) => s.run === run)) return;
  picker.choose(run);
  await loadSteps();
  if ([...ui.layer.options].some((o) => o.value === layer)) {
    ui.layer.value = layer;
    draw();
  }
}

async function loadSeries() {
  const { series: all } = await api.listSeries();
  const series = all.filter((s) => s.kind === "cam");
  ui.empty.hidden = series.length > 0;
  await Promise.all([activations.update(all), model.update(all)]);
  picker.setSeries(series);
  await loadSteps();
}

async function loadSteps() {
  const logged = await picker.loadSteps();
  if (!picker.current()) {
    ui.grid.replaceChildren();
    ui.notice.textContent = "";
    return;
  }
  const loaded = picker.steps.length;
  ui.notice.textContent =
    logged != null && logged > loaded
      ? `Showing ${loaded} of ${logged} logged steps: TensorBoard dropped the others ` +
        "(its --samples_per_plugin setting for cam)."
      : "";
  await showStep();
}

async function showStep() {
  const series = picker.current();
  const entry = picker.entry();
  if (!series || !entry) return;
  const token = ++state.token;
  let data;
  try {
    data = await api.loadSample(series.run, series.tag, entry.step);
  } catch (error) {
    if (token === state.token) ui.notice.textContent = `Could not load step ${entry.step}: ${error.message}`;
    return;
  }
  if (token !== state.token) return; // a newer request won
  if (data.error) {
    ui.grid.replaceChildren(el("p", { className: "damaged", textContent: data.error }));
    return;
  }
  state.current = data;
  updateMapPickers(data.header);
  draw();
  ui.grid.dataset.step = String(entry.step); // which step the grid shows (lets tests wait for a redraw)
}

function updateMapPickers(header) {
  setOptions(ui.method, header.methods.map((m) => [m, m]), ui.method.value);
  setOptions(ui.layer, header.layers.map((l) => [l, l || "(unnamed)"]), ui.layer.value);
  const k = Math.max(0, ...header.images.map((i) => i.targets.length));
  const targets = Array.from({ length: k }, (_, j) => [String(j), k > 1 ? `target ${j + 1} (top-${j + 1})` : "target"]);
  setOptions(ui.target, targets, ui.target.value);
}

function caption(target) {
  if (!target) return "";
  const name = target.class_name ?? (target.class_id != null ? `class ${target.class_id}` : "custom target");
  const parts = [name];
  if (target.class_name != null && target.class_id != null) parts[0] = `${name} (${target.class_id})`;
  if (target.prob != null) parts.push(`p=${target.prob.toFixed(3)}`);
  if (target.score != null) parts.push(`score=${target.score.toFixed(3)}`);
  return parts.join("  ");
}

const METRIC_LABELS = [
  ["average_drop", "Average drop ↓"],
  ["increase_in_confidence", "Increase in confidence ↑"],
  ["deletion_auc", "Deletion AUC ↓"],
  ["insertion_auc", "Insertion AUC ↑"],
];

/** The faithfulness line for the shown method and layer, beside the random baseline. */
function showMetrics(header) {
  const records = header.metrics ?? [];
  const find = (method) => records.find((r) => r.method === method && r.layer === ui.layer.value);
  const shown = find(ui.method.value);
  const baseline = find("random");
  ui.metrics.textContent = shown
    ? METRIC_LABELS.map(([key, label]) => {
        const base = baseline && ui.method.value !== "random" ? ` (random ${baseline[key].toFixed(3)})` : "";
        return `${label} ${shown[key].toFixed(3)}${base}`;
      }).join("   ·   ")
    : "";
}

/** Redraws every card of the current sample with the current controls. */
function draw() {
  const data = state.current;
  if (!data) return;
  const { header, maps, images } = data;
  showMetrics(header);
  const targetIndex = Number(ui.target.value || 0);
  const cards = header.images.map((info, i) => {
    const image = images[i];
    const canvas = el("canvas", { width: info.width, height: info.height, className: "overlay" });
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(image, 0, 0, info.width, info.height);
    const entry = header.maps.find(
      (m) => m.image === i && m.target === targetIndex && m.method === ui.method.value && m.layer === ui.layer.value,
    );
    if (entry) {
      const raw = decodeMap(maps, entry);
      const values = bilinear(raw, entry.height, entry.width, info.height, info.width);
      const [lo, hi] = range(raw);
      const pixels = context.getImageData(0, 0, info.width, info.height);
      blend(pixels.data, values, lo, hi, ui.colormap.value, Number(ui.opacity.value));
      context.putImageData(pixels, 0, 0);
    }
    const text = caption(info.targets[targetIndex]);
    return el("figure", { className: "card" }, [
      canvas,
      el("figcaption", { className: "caption", textContent: text, title: text }),
    ]);
  });
  ui.grid.replaceChildren(...cards);
}

function guarded(action) {
  return () =>
    action().catch((error) => {
      ui.notice.textContent = `Error: ${error.message}`;
    });
}

export async function render() {
  document.head.append(el("link", { rel: "stylesheet", href: "./static/style.css" }));
  setOptions(ui.colormap, COLORMAPS.map((c) => [c, c]), "jet");
  buildEmptyState();
  const bar = el("div", { className: "toolbar" }, [
    ...picker.controls("add_cam"),
    labelled("Method", ui.method, "CAM method"),
    labelled("Layer", ui.layer, "Layer the map was computed at"),
    labelled("Target", ui.target, "Which of the explained classes to show"),
    labelled("Colour map", ui.colormap, "Colour map of the overlay"),
    labelled("Opacity", ui.opacity, "Opacity of the map over the picture"),
    ui.refresh,
  ]);
  ui.camView.append(bar, ui.notice, ui.metrics, ui.empty, ui.grid);
  const switcher = el("nav", { className: "views", role: "tablist" }, ui.views);
  document.body.append(el("main", { className: "cam-tab" }, [switcher, ui.camView, activations.node, model.node]));
  for (const button of ui.views) button.addEventListener("click", () => showView(button.dataset.view));
  activations.mount({ onError: (error) => (activations.notice.textContent = `Error: ${error.message}`) });
  model.mount({
    openActivations: (run, layer) => {
      showView("activations");
      return activations.open(run, layer);
    },
    openCam: (run, layer) => guarded(() => openCam(run, layer))(),
  });
  showView("cam");

  picker.run.addEventListener("change", guarded(async () => { picker.updateTags(); await loadSteps(); }));
  picker.tag.addEventListener("change", guarded(loadSteps));
  picker.step.addEventListener("input", guarded(showStep));
  picker.bindArrowKeys(guarded(showStep));
  for (const control of [ui.method, ui.layer, ui.target, ui.colormap]) control.addEventListener("change", draw);
  ui.opacity.addEventListener("input", draw);
  ui.refresh.addEventListener("click", guarded(loadSeries));
  onDataReloaded(guarded(loadSeries)); // TensorBoard's own reload button and auto-reload
  await guarded(loadSeries)();
}
