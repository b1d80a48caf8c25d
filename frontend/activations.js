/**
 * The Activations view: for one layer and image of a logged sample (add_activations), the channel
 * grid (like torchvision's make_grid), a chart of every channel's statistics, and one tile large
 * with the value under the mouse. Activations or gradients, per-channel or shared colour scale.
 */

import * as api from "./api.js";
import { COLORMAPS } from "./colormaps.js";
import { el, labelled, setOptions } from "./dom.js";
import { STATS, decodeBlockMaps, decodeStats, shapeText } from "./format.js";
import { formatValue, formatValues, scaleLegend } from "./legend.js";
import { blend, range, upsample } from "./maps.js";
import { SeriesPicker, bindOptionKeys } from "./picker.js";
import { cssColor, onThemeChange } from "./theme.js";
import { Latest, loadChosenSample, loadSeriesSteps } from "./view.js";

const LARGE = 256; // pixels a side of the enlarged tile
const ORDERS = [
  ["index", "channel number"],
  ...STATS.map((s) => [s, `${s}, largest first`]),
  ["stored", "as logged (add_activations' channel_order)"],
];

const picker = new SeriesPicker("act-");
const state = { models: [], tables: new Map(), current: null, channel: null };
const latest = new Latest(); // the newest step request; older answers are dropped

const ui = {
  layer: el("select", { id: "act-layer" }),
  image: el("select", { id: "act-image" }),
  kind: el("select", { id: "act-kind" }),
  order: el("select", { id: "act-order" }),
  scale: el("select", { id: "act-scale" }),
  colormap: el("select", { id: "act-colormap" }),
  chartStat: el("select", { id: "act-chart-stat" }),
  picture: el("canvas", { id: "act-picture", className: "picture", width: 1, height: 1 }),
  grid: el("div", { id: "act-grid", className: "channel-grid" }),
  chart: el("canvas", { id: "act-chart", className: "chart", width: 640, height: 160 }),
  large: el("canvas", { id: "act-large", className: "large", width: LARGE, height: LARGE }),
  value: el("div", { id: "act-value", className: "value" }),
  largeLegend: el("div", { id: "act-large-legend" }),
  gridLegend: el("div", { id: "act-grid-legend" }),
  detailTitle: el("div", { id: "act-detail-title", className: "caption" }),
  empty: el("div", { id: "act-empty", className: "empty", hidden: true }),
};

export const notice = el("div", { id: "act-notice", className: "notice", role: "status" });
export const node = el("section", { id: "activations-view", className: "view", hidden: true });

/** The run's model table (the newest "model" sample), or null. */
async function modelTable(run) {
  const series = state.models.find((s) => s.run === run);
  if (!series) return null;
  if (!state.tables.has(run)) {
    state.tables.set(run, api.loadSample(run, series.tag, series.max_step).then((d) => d.header ?? null));
  }
  return state.tables.get(run);
}

export async function update(all) {
  const series = all.filter((s) => s.kind === "activations");
  state.models = all.filter((s) => s.kind === "model");
  state.tables.clear();
  ui.empty.hidden = series.length > 0;
  picker.setSeries(series);
  await loadSteps();
}

function clear() {
  state.current = null;
  ui.grid.replaceChildren();
}

const loadSteps = () => loadSeriesSteps(picker, latest, { clear, show: showStep });

async function showStep() {
  const run = picker.current()?.run;
  const [shown, table] = await Promise.all([loadChosenSample(picker, latest), run ? modelTable(run) : null]);
  if (!shown) return;
  if (shown.error) throw shown.error;
  const data = shown.sample;
  if (data.error) {
    state.current = null;
    ui.grid.replaceChildren(el("p", { className: "damaged", textContent: data.error }));
    return;
  }
  state.current = data;
  updatePickers(data.header, table);
  draw();
}

function updatePickers(header, table) {
  const shapes = new Map((table?.modules ?? []).map((m) => [m.name, m.output_shape]));
  setOptions(
    ui.layer,
    header.layers.map((l) => [l, shapes.has(l) ? `${l}  ${shapeText(shapes.get(l))}` : l]),
    ui.layer.value,
  );
  setOptions(ui.image, header.images.map((_, i) => [String(i), `image ${i + 1}`]), ui.image.value);
  const kinds = [...new Set(header.blocks.map((b) => b.kind))];
  setOptions(ui.kind, kinds.map((k) => [k, k === "activation" ? "activations" : "gradients"]), ui.kind.value);
}

function currentBlock(kind = ui.kind.value) {
  const header = state.current?.header;
  return header?.blocks.find(
    (b) => b.layer === ui.layer.value && b.image === Number(ui.image.value || 0) && b.kind === kind,
  );
}

/** Colours a map into an RGBA ImageData of the same size. */
function paint(values, width, height, lo, hi) {
  const pixels = new ImageData(width, height);
  for (let i = 3; i < pixels.data.length; i += 4) pixels.data[i] = 255;
  blend(pixels.data, values, { lo, hi, colormap: ui.colormap.value, opacity: 1 });
  return pixels;
}

async function drawPicture() {
  const data = state.current;
  const index = Number(ui.image.value || 0);
  const image = await data.image(index);
  if (data !== state.current) return; // another step was chosen meanwhile
  ui.picture.hidden = !image;
  if (!image) return;
  const info = data.header.images[index];
  ui.picture.width = info.width;
  ui.picture.height = info.height;
  ui.picture.getContext("2d").drawImage(image, 0, 0, info.width, info.height);
}

/** Redraws the picture, the grid, the chart and the enlarged tile with the current controls. */
export function draw() {
  if (!state.current) return;
  const block = currentBlock();
  if (!block) return;
  drawPicture().catch(() => (ui.picture.hidden = true));
  const stats = decodeStats(state.current.stats, block);
  const activationBlock = currentBlock("activation") ?? block;
  const dead = decodeStats(state.current.stats, activationBlock).map((s) => s.zeros >= 1);
  const maps = decodeBlockMaps(state.current.maps, block);
  const order = ui.order.value;
  if (order !== "stored") {
    const key = (m) => (order === "index" ? -m.channel : stats[m.channel][order]);
    maps.sort((a, b) => key(b) - key(a) || a.channel - b.channel);
  }
  if (!maps.some((m) => m.channel === state.channel)) state.channel = maps[0]?.channel ?? null; // the first tile
  let shared = [Infinity, -Infinity];
  for (const m of maps) {
    const [lo, hi] = range(m.values);
    shared = [Math.min(shared[0], lo), Math.max(shared[1], hi)];
  }
  const tiles = maps.map((m) => {
    const [lo, hi] = ui.scale.value === "shared" ? shared : range(m.values);
    const span = ` (colours ${formatValues([lo, hi]).join(" to ")})`;
    const canvas = el("canvas", { width: block.map_width, height: block.map_height });
    canvas.getContext("2d").putImageData(paint(m.values, block.map_width, block.map_height, lo, hi), 0, 0);
    const tile = el("figure", { className: dead[m.channel] ? "tile dead" : "tile", dataset: { channel: String(m.channel) } }, [
      canvas,
      el("figcaption", { textContent: dead[m.channel] ? `${m.channel} dead` : String(m.channel) }),
    ]);
    tile.title = `channel ${m.channel}: mean ${stats[m.channel].mean.toPrecision(3)}, ` +
      `max ${stats[m.channel].max.toPrecision(3)}${span}`;
    tile.addEventListener("click", () => {
      state.channel = m.channel;
      drawLarge();
    });
    return tile;
  });
  ui.grid.replaceChildren(...tiles);
  const sharedScale = ui.scale.value === "shared" && maps.length > 0;
  ui.gridLegend.replaceChildren(sharedScale
    ? scaleLegend({ lo: shared[0], hi: shared[1], colormap: ui.colormap.value, label: "every tile" })
    : el("div", { className: "scale", textContent: "Each tile is coloured over its own range (hover a tile for it)" }));
  drawChart(stats, dead, maps.map((m) => m.channel));
  drawLarge();
}

/**
 * Bars of the chosen statistic for every channel, in the tiles' order (the channels shown as tiles first,
 * the others after them in channel order), with a value axis and a channel axis; the bars of tiled
 * channels are in the accent colour, the others muted, dead channels red.
 */
function drawChart(stats, dead, tiled) {
  const name = ui.chartStat.value;
  const width = Math.max(320, Math.round(ui.chart.getBoundingClientRect().width) || 640);
  if (ui.chart.width !== width) ui.chart.width = width;
  const { height } = ui.chart;
  const [left, right, top, bottom] = [56, 8, 8, 34];
  const context = ui.chart.getContext("2d");
  context.clearRect(0, 0, width, height);
  const shown = new Set(tiled);
  const order = [...tiled, ...stats.map((_, c) => c).filter((c) => !shown.has(c))];
  const values = order.map((c) => stats[c][name]);
  const lo = Math.min(0, ...values);
  const hi = Math.max(0, ...values);
  const span = hi > lo ? hi - lo : 1;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const y = (v) => top + plotH - ((v - lo) / span) * plotH;
  const bar = plotW / Math.max(values.length, 1);
  const colours = { tiled: cssColor("--accent"), other: cssColor("--bar-muted"), dead: cssColor("--danger") };
  values.forEach((v, i) => {
    const c = order[i];
    context.fillStyle = dead[c] ? colours.dead : shown.has(c) ? colours.tiled : colours.other;
    const tall = Math.max(Math.abs(y(0) - y(v)), 2); // a zero bar stays visible as a 2-pixel line
    context.fillRect(left + Math.floor(i * bar), Math.min(Math.min(y(v), y(0)), top + plotH - tall), Math.max(Math.floor(bar) - 1, 1), tall);
  });
  context.strokeStyle = cssColor("--axis");
  context.fillStyle = cssColor("--axis");
  context.font = "11px Roboto, system-ui, sans-serif";
  context.beginPath();
  context.moveTo(left, top);
  context.lineTo(left, top + plotH);
  context.moveTo(left, y(0));
  context.lineTo(left + plotW, y(0));
  context.stroke();
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (const v of new Set([lo, 0, hi])) context.fillText(formatValue(v), left - 4, y(v));
  context.textAlign = "center";
  context.textBaseline = "top";
  const every = Math.ceil(values.length / Math.max(1, Math.floor(plotW / 28)));
  order.forEach((c, i) => {
    if (i % every === 0) context.fillText(String(c), left + (i + 0.5) * bar, top + plotH + 3);
  });
  context.fillText(`${name} per channel: the ${tiled.length} tiled channels first, in the tiles' order` +
    (order.length > tiled.length ? `, then the other ${order.length - tiled.length}` : ""), left + plotW / 2, top + plotH + 18);
  ui.chart.dataset.order = order.join(",");
  ui.chart.title = `${name} of each of the ${values.length} channels (${lo.toPrecision(3)} to ${hi.toPrecision(3)})`;
}

/** The clicked channel, upsampled bilinearly to LARGE pixels. */
function drawLarge() {
  const block = currentBlock();
  const maps = block ? decodeBlockMaps(state.current.maps, block) : [];
  const shown = maps.find((m) => m.channel === state.channel);
  ui.large.hidden = !shown;
  ui.largeLegend.replaceChildren();
  ui.detailTitle.textContent = shown
    ? `channel ${shown.channel} of ${block.layer} (${block.kind}); click another tile to show it here`
    : "";
  ui.value.textContent = "";
  if (!shown) return;
  const [lo, hi] = range(shown.values);
  const up = upsample(shown.values, block.map_height, block.map_width, LARGE, LARGE);
  ui.large.getContext("2d").putImageData(paint(up, LARGE, LARGE, lo, hi), 0, 0);
  ui.largeLegend.append(scaleLegend({ lo, hi, colormap: ui.colormap.value, label: `channel ${shown.channel}` }));
  ui.large.dataset.channel = String(shown.channel);
}

/** The stored value of the cell under the mouse in the enlarged tile. */
function showValue(event) {
  const block = currentBlock();
  const shown = block && decodeBlockMaps(state.current.maps, block).find((m) => m.channel === state.channel);
  if (!shown) return;
  const box = ui.large.getBoundingClientRect();
  const x = Math.min(Math.floor(((event.clientX - box.left) / box.width) * block.map_width), block.map_width - 1);
  const y = Math.min(Math.floor(((event.clientY - box.top) / box.height) * block.map_height), block.map_height - 1);
  const value = shown.values[y * block.map_width + x];
  ui.value.textContent = `channel ${shown.channel}  (row ${y}, column ${x})  ${value.toPrecision(4)}`;
  ui.value.dataset.value = String(value);
}

/** Shows a layer of a run (the Model view's links): its first activation series that has the layer. */
export async function open(run, layer) {
  picker.choose(run);
  await loadSteps();
  if ([...ui.layer.options].some((o) => o.value === layer)) {
    ui.layer.value = layer;
    draw();
    notice.textContent = "";
  } else {
    notice.textContent = `Layer ${layer} has no logged activations in run ${run}.`;
  }
}

export function mount({ onError }) {
  const guarded = (action) => () => action().catch(onError);
  setOptions(ui.colormap, COLORMAPS.map((c) => [c, c]), "viridis");
  setOptions(ui.order, ORDERS, "index");
  setOptions(ui.scale, [["channel", "per channel"], ["shared", "one shared scale"]], "channel");
  setOptions(ui.chartStat, STATS.map((s) => [s, s]), "mean");
  ui.empty.append(
    el("h2", { textContent: "No activations logged yet" }),
    el("pre", { textContent: 'SummaryWriter("runs/exp").add_activations("acts", model, images, global_step=step)' }),
  );
  const bar = el("div", { className: "toolbar" }, [
    ...picker.controls("add_activations"),
    labelled("Layer", ui.layer, "Layer (output shape from the model summary)"),
    labelled("Image", ui.image, "Which image of the batch"),
    labelled("Show", ui.kind, "Activations or the gradients of the target"),
    labelled("Order", ui.order, "Order of the tiles: channel number, a statistic (largest first), or as logged: " +
      "the order add_activations kept them in (its channel_order, by default the largest mean first)"),
    labelled("Scale", ui.scale, "Normalise each tile by itself or all by one range"),
    labelled("Colour map", ui.colormap, "Colour map of the tiles"),
  ]);
  const detail = el("div", { className: "detail" }, [ui.picture, el("div", {}, [ui.detailTitle, ui.large, ui.largeLegend, ui.value])]);
  const chart = el("div", { className: "chart-box" }, [labelled("Chart", ui.chartStat, "Statistic of every channel"), ui.chart]);
  node.append(bar, notice, ui.empty, detail, chart, ui.gridLegend, ui.grid);
  picker.wire(guarded(loadSteps), guarded(showStep));
  bindOptionKeys(ui.image, draw);
  for (const control of [ui.layer, ui.image, ui.kind, ui.order, ui.scale, ui.colormap, ui.chartStat]) {
    control.addEventListener("change", draw);
  }
  ui.large.addEventListener("mousemove", showValue);
  onThemeChange(draw);
}
