/**
 * The Checks view: a sanity check logged by add_sanity_check (the model-parameter randomization test).
 * For one tag and step: each method's similarity to its original maps as the modules are re-initialised
 * stage by stage (one line per method; a method whose line stays near 1 does not depend on the model),
 * and below, one image's maps at every stage, a strip per method.
 */

import { lut } from "./colormaps.js";
import { el, labelled, setOptions } from "./dom.js";
import { decodeMap } from "./format.js";
import { formatValue, scaleLegend } from "./legend.js";
import { blend, range, upsample } from "./maps.js";
import { SeriesPicker } from "./picker.js";
import { Latest, loadChosenSample, loadSeriesSteps } from "./view.js";

const TILE = 96; // pixels a side of each map in the strips
const MEASURES = [
  ["spearman_abs", "Spearman rank correlation of |map|"],
  ["spearman", "Spearman rank correlation"],
  ["ssim", "SSIM"],
];

const picker = new SeriesPicker("chk-");
const latest = new Latest();
const state = { sample: null };

const ui = {
  measure: el("select", { id: "chk-measure" }),
  image: el("select", { id: "chk-image" }),
  chart: el("canvas", { id: "chk-chart", width: 720, height: 220 }),
  legend: el("div", { id: "chk-legend", className: "legend" }),
  scale: el("div", { id: "chk-scale" }),
  strips: el("div", { id: "chk-strips", className: "strips" }),
  empty: el("div", { id: "chk-empty", className: "empty", hidden: true }),
};

export const notice = el("div", { id: "chk-notice", className: "notice", role: "status" });
export const node = el("section", { id: "checks-view", className: "view", hidden: true });

export async function update(all) {
  const series = all.filter((s) => s.kind === "sanity");
  ui.empty.hidden = series.length > 0;
  picker.setSeries(series);
  await loadSteps();
}

function clear() {
  state.sample = null;
  ui.strips.replaceChildren();
}

const loadSteps = () => loadSeriesSteps(picker, latest, { clear, show: showStep });

async function showStep() {
  const shown = await loadChosenSample(picker, latest);
  if (!shown) return;
  if (shown.error) throw shown.error;
  const { sample, entry } = shown;
  if (sample.error) {
    state.sample = null;
    ui.strips.replaceChildren(el("p", { className: "damaged", textContent: sample.error }));
    return;
  }
  state.sample = sample;
  setOptions(ui.image, sample.header.images.map((_, i) => [String(i), `image ${i + 1}`]), ui.image.value || "0");
  await draw();
  ui.strips.dataset.step = String(entry.step); // which step is drawn (lets tests wait for it)
}

/** A colour per method, from the jet table (the methods spread over it). */
function colour(index, count) {
  const table = lut("jet");
  const c = Math.round((count > 1 ? index / (count - 1) : 0.5) * 255) * 3;
  return `rgb(${table[c]}, ${table[c + 1]}, ${table[c + 2]})`;
}

/** The similarity curves: stage 0 is the original (similarity 1), then one point per re-initialised module. */
function drawChart(header) {
  const context = ui.chart.getContext("2d");
  const { width, height } = ui.chart;
  const pad = 32;
  const top = 14;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#999";
  context.strokeRect(pad, top, width - pad - 8, height - pad - top);
  context.fillStyle = "#444";
  context.font = "11px sans-serif";
  for (const v of [-1, 0, 1]) context.fillText(String(v), 4, y(v) + 4);
  const stages = header.stages.length;
  const x = (i) => pad + ((width - pad - 16) * i) / Math.max(stages, 1);
  function y(v) {
    return top + ((height - pad - top) * (1 - v)) / 2;
  }
  ui.legend.replaceChildren();
  header.methods.forEach((method, k) => {
    const values = [1, ...header.measures[method][ui.measure.value]];
    context.strokeStyle = colour(k, header.methods.length);
    context.lineWidth = 2;
    context.beginPath();
    values.forEach((v, i) => (i ? context.lineTo(x(i), y(v)) : context.moveTo(x(i), y(v))));
    context.stroke();
    const swatch = el("span", { className: "swatch" });
    swatch.style.background = colour(k, header.methods.length);
    const last = values[values.length - 1];
    ui.legend.append(el("span", { className: "legend-item" }, [swatch, el("span", {
      textContent: `${method}: ${last.toFixed(3)} after ${header.stages[header.stages.length - 1] ?? "–"}`,
    })]));
  });
  ui.chart.title = `x: the original, then ${header.stages.join(", ")} re-initialised (${header.mode})`;
}

/** One map as a TILE x TILE canvas, coloured over its own range. */
function tile(buffer, entry, caption) {
  const canvas = el("canvas", { width: TILE, height: TILE });
  const values = upsample(decodeMap(buffer, entry), entry.height, entry.width, TILE, TILE, "bilinear");
  const [lo, hi] = range(values);
  const pixels = new ImageData(TILE, TILE);
  for (let i = 3; i < pixels.data.length; i += 4) pixels.data[i] = 255;
  blend(pixels.data, values, { lo, hi, colormap: "jet", opacity: 1 });
  canvas.getContext("2d").putImageData(pixels, 0, 0);
  const figure = el("figure", { className: "card thumb" }, [canvas, el("figcaption", { textContent: caption })]);
  figure.title = `${caption}: colours span ${formatValue(lo)} to ${formatValue(hi)}`;
  figure.dataset.lo = String(lo);
  figure.dataset.hi = String(hi);
  return figure;
}

function drawStrips(sample) {
  const { header } = sample;
  const image = Number(ui.image.value || 0);
  const names = ["original", ...header.stages];
  ui.scale.replaceChildren(scaleLegend({ lo: 0, hi: 1, colormap: "jet", ends: ["min", "max"],
    label: "Each map is coloured from its own minimum to its maximum (hover a map for its values)" }));
  ui.strips.replaceChildren(...header.methods.map((method) => {
    const maps = header.maps.filter((m) => m.method === method && m.image === image);
    maps.sort((a, b) => a.stage - b.stage);
    return el("div", { className: "strip" }, [
      el("div", { className: "caption", textContent: method }),
      el("div", { className: "filmstrip" }, maps.map((m) => tile(sample.maps, m, names[m.stage] ?? ""))),
    ]);
  }));
}

async function draw() {
  const sample = state.sample;
  if (!sample) return;
  drawChart(sample.header);
  drawStrips(sample);
}

export function mount({ onError }) {
  const guarded = (action) => () => action().catch(onError);
  setOptions(ui.measure, MEASURES, "spearman_abs");
  ui.empty.append(
    el("h2", { textContent: "No sanity checks logged yet" }),
    el("pre", { textContent: 'SummaryWriter("runs/exp").add_sanity_check("checks", model, images, global_step=step)' }),
  );
  const bar = el("div", { className: "toolbar" }, [
    ...picker.controls("add_sanity_check"),
    labelled("Measure", ui.measure, "How a stage's maps are compared with the original ones"),
    labelled("Image", ui.image, "Whose maps the strips show"),
  ]);
  node.append(bar, notice, ui.empty, ui.chart, ui.legend, ui.scale, ui.strips);
  picker.wire(guarded(loadSteps), guarded(showStep));
  ui.measure.addEventListener("change", guarded(draw));
  ui.image.addEventListener("change", guarded(draw));
}
