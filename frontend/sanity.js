/**
 * The Checks view: a sanity check logged by add_sanity_check (the model-parameter randomization test).
 * For one tag and step: each method's similarity to its original maps as the modules are re-initialised
 * stage by stage (one line per method; a method whose line stays near 1 does not depend on the model),
 * and below, one image's maps at every stage, a strip per method.
 */

import { el, labelled, setOptions } from "./dom.js";
import { decodeMap } from "./format.js";
import { formatValues, scaleLegend } from "./legend.js";
import { blend, range, upsample } from "./maps.js";
import { SeriesPicker } from "./picker.js";
import { cssColor, onThemeChange } from "./theme.js";
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
  chart: el("canvas", { id: "chk-chart", width: 760, height: 280 }),
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
  for (const part of [ui.bar, ui.chart, ui.legend, ui.scale, ui.strips]) part.hidden = series.length === 0;
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

/** A line style per method: the theme's line colours, with a dash and a marker of its own, so equal curves stay visible. */
const DASHES = [[], [8, 4], [2, 3], [10, 3, 2, 3], [4, 4]];
const OFFSET = 2.5; // pixels between the curves of consecutive methods
const MARKERS = ["circle", "square", "triangle", "diamond", "cross"];

function lineStyle(k) {
  return { colour: cssColor(`--line-${(k % 7) + 1}`), dash: DASHES[k % DASHES.length], marker: MARKERS[k % MARKERS.length] };
}

function marker(context, kind, x, y, r = 4) {
  context.beginPath();
  if (kind === "circle") context.arc(x, y, r, 0, 2 * Math.PI);
  else if (kind === "square") context.rect(x - r, y - r, 2 * r, 2 * r);
  else if (kind === "triangle") {
    context.moveTo(x, y - r);
    context.lineTo(x + r, y + r);
    context.lineTo(x - r, y + r);
    context.closePath();
  } else if (kind === "diamond") {
    context.moveTo(x, y - r);
    context.lineTo(x + r, y);
    context.lineTo(x, y + r);
    context.lineTo(x - r, y);
    context.closePath();
  } else {
    context.moveTo(x - r, y - r);
    context.lineTo(x + r, y + r);
    context.moveTo(x + r, y - r);
    context.lineTo(x - r, y + r);
  }
  if (kind === "cross") context.stroke();
  else context.fill();
}

/**
 * The similarity curves: stage 0 is the original (similarity 1), then one point per re-initialised module.
 * Axes: the stages along x (named), the measure along y (-1 to 1). Methods are drawn a pixel or two apart
 * with their own dash and marker, so curves with equal values do not hide each other.
 */
function drawChart(header) {
  const context = ui.chart.getContext("2d");
  const { width, height } = ui.chart;
  const left = 56;
  const right = 16;
  const top = 14;
  const bottom = 48;
  const fg = cssColor("--fg");
  const muted = cssColor("--axis");
  context.clearRect(0, 0, width, height);
  context.font = "12px Roboto, system-ui, sans-serif";
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const stages = ["original", ...header.stages];
  const x = (i) => left + (plotW * i) / Math.max(stages.length - 1, 1);
  const y = (v) => top + (plotH * (1 - v)) / 2;
  context.strokeStyle = cssColor("--grid-line");
  context.lineWidth = 1;
  context.fillStyle = muted;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (const v of [-1, -0.5, 0, 0.5, 1]) {
    context.beginPath();
    context.moveTo(left, y(v));
    context.lineTo(width - right, y(v));
    context.stroke();
    context.fillText(String(v), left - 6, y(v));
  }
  context.textAlign = "center";
  context.textBaseline = "top";
  const every = Math.ceil(stages.length / Math.max(1, Math.floor(plotW / 90))); // labels that fit
  stages.forEach((name, i) => {
    if (i % every !== 0 && i !== stages.length - 1) return;
    context.textAlign = i === 0 ? "left" : i === stages.length - 1 ? "right" : "center"; // the ends stay inside
    context.fillText(name, i === 0 ? x(i) - 4 : x(i), height - bottom + 6, 88);
  });
  context.textAlign = "center";
  context.fillStyle = fg;
  context.fillText(`Modules re-initialised (${header.mode})`, left + plotW / 2, height - 16);
  context.save();
  context.translate(14, top + plotH / 2);
  context.rotate(-Math.PI / 2);
  context.fillText(MEASURES.find(([key]) => key === ui.measure.value)?.[1] ?? "", 0, -8);
  context.restore();
  ui.legend.replaceChildren();
  const count = header.methods.length;
  header.methods.forEach((method, k) => {
    const values = [1, ...header.measures[method][ui.measure.value]];
    const style = lineStyle(k);
    const offset = (k - (count - 1) / 2) * OFFSET; // pixels: equal curves lie side by side
    context.strokeStyle = style.colour;
    context.fillStyle = style.colour;
    context.lineWidth = 2;
    context.setLineDash(style.dash);
    context.beginPath();
    values.forEach((v, i) => (i ? context.lineTo(x(i), y(v) + offset) : context.moveTo(x(i), y(v) + offset)));
    context.stroke();
    context.setLineDash([]);
    values.forEach((v, i) => marker(context, style.marker, x(i), y(v) + offset, 3));
    const swatch = el("canvas", { className: "swatch", width: 28, height: 10 });
    const s = swatch.getContext("2d");
    s.strokeStyle = style.colour;
    s.fillStyle = style.colour;
    s.lineWidth = 2;
    s.setLineDash(style.dash);
    s.beginPath();
    s.moveTo(0, 5);
    s.lineTo(28, 5);
    s.stroke();
    s.setLineDash([]);
    marker(s, style.marker, 14, 5, 3);
    const last = values[values.length - 1];
    ui.legend.append(el("span", { className: "legend-item", dataset: { dash: style.dash.join(","), marker: style.marker } }, [
      swatch,
      el("span", { textContent: `${method}: ${last.toFixed(3)} after ${header.stages[header.stages.length - 1] ?? "–"}` }),
    ]));
  });
  ui.chart.title = `x: the original, then ${header.stages.join(", ")} re-initialised (${header.mode}); ` +
    `the curves are drawn ${OFFSET} pixels apart so that equal ones stay visible`;
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
  figure.title = `${caption}: colours span ${formatValues([lo, hi]).join(" to ")}`;
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
    el("p", { textContent: "This view shows whether each method's maps change when the model's weights are " +
      "re-initialised (a map that stays the same does not explain the model). Log one with:" }),
    el("pre", { textContent: 'SummaryWriter("runs/exp").add_sanity_check("checks", model, images, global_step=step)' }),
  );
  ui.bar = el("div", { className: "toolbar" }, [
    ...picker.controls("add_sanity_check"),
    labelled("Measure", ui.measure, "How a stage's maps are compared with the original ones"),
    labelled("Image", ui.image, "Whose maps the strips show"),
  ]);
  node.append(ui.bar, notice, ui.empty, ui.chart, ui.legend, ui.scale, ui.strips);
  picker.wire(guarded(loadSteps), guarded(showStep));
  ui.measure.addEventListener("change", guarded(draw));
  ui.image.addEventListener("change", guarded(draw));
  onThemeChange(() => state.sample && drawChart(state.sample.header));
}
