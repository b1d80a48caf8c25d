/**
 * The CAM view: the maps of one series, in four modes.
 *
 * - Grid: every image of the step, for one method, layer and target.
 * - Compare: one image across methods, layers, classes or runs.
 * - Timeline: one image at the chosen step, over a filmstrip of every step (Play walks through them).
 * - Difference: one image's map minus the same map at another step or by another method.
 *
 * Maps are stored raw, so the scale is either each map's own min-max or one range over
 * the whole series (`/ranges`), which keeps brightness comparable across training.
 */

import * as api from "./api.js";
import { Card, Lens, Painter, composePng } from "./cards.js";
import { COLORMAPS, DIVERGING } from "./colormaps.js";
import { el, labelled, setOptions } from "./dom.js";
import { blend, decodeMap, normalise, range, upsample } from "./maps.js";
import { SeriesPicker, bindOptionKeys, pageKey } from "./picker.js";
import * as urlstate from "./urlstate.js";

const MODES = [
  ["grid", "Grid"],
  ["compare", "Compare"],
  ["timeline", "Timeline"],
  ["diff", "Difference"],
];
const AXES = [
  ["method", "methods"],
  ["layer", "layers"],
  ["target", "classes"],
  ["run", "runs"],
];
const AGAINST = [
  ["step", "another step"],
  ["method", "another method"],
];
const METRIC_LABELS = [
  ["average_drop", "Average drop ↓"],
  ["increase_in_confidence", "Increase in confidence ↑"],
  ["deletion_auc", "Deletion AUC ↓"],
  ["insertion_auc", "Insertion AUC ↑"],
];
const THUMBNAIL = 72; // filmstrip pictures are painted at most this many pixels wide or high
const PLAY_INTERVAL_MS = 400;

const picker = new SeriesPicker("");
const lens = new Lens();

const select = (id) => el("select", { id });
const ui = {
  mode: select("mode"),
  axis: select("axis"),
  against: select("against"),
  vsStep: select("vs-step"),
  vsMethod: select("vs-method"),
  image: select("image"),
  method: select("method"),
  layer: select("layer"),
  target: select("target"),
  colormap: select("colormap"),
  opacity: el("input", { id: "opacity", type: "range", min: "0", max: "1", step: "0.05", value: "0.5" }),
  threshold: el("input", { id: "threshold", type: "range", min: "0", max: "1", step: "0.05", value: "0" }),
  norm: select("norm"),
  upsample: select("upsample"),
  zoom: select("zoom"),
  play: el("button", { id: "play", type: "button", textContent: "Play", title: "Walk through the steps (Space)" }),
  refresh: el("button", { id: "refresh", type: "button", textContent: "Refresh", title: "Reload runs, tags and steps" }),
  download: el("button", {
    id: "download",
    type: "button",
    textContent: "Download PNG",
    title: "Save the shown maps, as zoomed, with their captions as one PNG",
  }),
  notice: el("div", { id: "notice", className: "notice", role: "status" }),
  metrics: el("div", {
    id: "metrics",
    className: "metrics",
    title: "Faithfulness of the shown method at this layer (add_cam(..., metrics=True)), random-map baseline in brackets",
  }),
  readout: el("div", { id: "readout", className: "value", title: "The map under the mouse" }),
  grid: el("div", { id: "grid", className: "grid" }),
  filmstrip: el("div", { id: "filmstrip", className: "filmstrip", hidden: true }),
  empty: el("div", { id: "empty", className: "empty", hidden: true }),
};

export const node = el("section", { id: "cam-view", className: "view" });
export const { notice } = ui;

const view = {
  sample: null, // the shown step's sample
  token: 0, // the newest showStep call; older ones give way
  playing: false,
  wanted: {}, // state from the URL not applied yet (the options it names are not there yet)
  mainCards: [],
  stripCards: [],
  stripKey: null, // what the filmstrip was painted for
  lastIndex: -1, // the step index shown before (to fetch ahead when moving one by one)
  vsMethodChosen: false, // the user picked the other method (else it follows the shown one)
  saveTimer: 0,
  painter: null,
  onError: () => {},
};

// -- what the cards show ---------------------------------------------------------

const decoded = new WeakMap(); // sample -> Map(offset -> raw values)

function rawValues(sample, entry) {
  if (!decoded.has(sample)) decoded.set(sample, new Map());
  const cache = decoded.get(sample);
  if (!cache.has(entry.offset)) cache.set(entry.offset, decodeMap(sample.maps, entry));
  return cache.get(entry.offset);
}

function findEntry(sample, { image, target, method, layer }) {
  return sample?.header?.maps.find(
    (m) => m.image === image && m.target === target && m.method === method && m.layer === layer,
  );
}

/** [lo, hi] that scale a map to [0, 1]: its own range, or its method and layer's over the series. */
async function scaleOf(source, raw) {
  if (ui.norm.value === "series") {
    const ranges = await api.listRanges(source.run, source.tag);
    const found = ranges.find((r) => r.method === source.entry.method && r.layer === source.entry.layer);
    if (found) return [found.min, found.max];
  }
  return range(raw);
}

/**
 * A map to draw at w x h: its raw values, its [lo, hi] scale, `upsampled()` (computed on first use
 * and kept, for the value under the mouse) and `cell(x, y)`, the stored value a pixel comes from.
 */
async function layerOf(source, w, h) {
  const { entry } = source;
  const raw = rawValues(source.sample, entry);
  const [lo, hi] = await scaleOf(source, raw);
  let values = null;
  const upsampled = () => (values ??= upsample(raw, entry.height, entry.width, h, w, ui.upsample.value));
  const cell = (x, y) => {
    const r = Math.min(Math.floor((y * entry.height) / h), entry.height - 1);
    const c = Math.min(Math.floor((x * entry.width) / w), entry.width - 1);
    return { r, c, value: raw[r * entry.width + c] };
  };
  return { raw, entry, lo, hi, upsampled, cell };
}

let scratch = new Float32Array(0); // one map upsampled for drawing; reused, so a redraw allocates nothing

function upsampledForDrawing(layer, w, h) {
  if (scratch.length < w * h) scratch = new Float32Array(w * h);
  const { raw, entry } = layer;
  return upsample(raw, entry.height, entry.width, h, w, ui.upsample.value, scratch);
}

const fmt = (v) => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toFixed(4));

/**
 * A card's job (see cards.Painter): `load()` gives {run, tag, sample, index, entry} or, for a
 * difference, {…, a, b} with two such sources; `maxSize` shrinks filmstrip pictures.
 */
function paintJob(load, maxSize = Infinity) {
  return async () => {
    const source = await load();
    const { sample, index } = source;
    const info = sample.header.images[index];
    const f = Math.min(1, maxSize / Math.max(info.width, info.height));
    const w = Math.max(1, Math.round(info.width * f));
    const h = Math.max(1, Math.round(info.height * f));
    const image = await sample.image(index);
    const where = (x, y) => `pixel (${Math.floor(x / f)}, ${Math.floor(y / f)})`;
    let overlay = null; // () => [values, blend options], run when drawing
    let probe = (x, y) => `${where(x, y)}: no map`;
    if (source.a && source.b) {
      const [a, b] = await Promise.all([layerOf(source.a, w, h), layerOf(source.b, w, h)]);
      const scaled = (layer, i) => normalise(layer.upsampled()[i], layer.lo, layer.hi);
      let difference = null;
      const values = () => (difference ??= a.upsampled().map((_, i) => scaled(a, i) - scaled(b, i)));
      overlay = () => [values(), { lo: -1, hi: 1, colormap: DIVERGING, centered: true }];
      probe = (x, y) => {
        const i = y * w + x;
        return `${where(x, y)}: difference ${fmt(values()[i])} = ${fmt(scaled(a, i))} − ${fmt(scaled(b, i))} ` +
          "(each scaled to [0, 1])";
      };
    } else if (source.entry) {
      const layer = await layerOf(source, w, h);
      overlay = () => [upsampledForDrawing(layer, w, h), { lo: layer.lo, hi: layer.hi, colormap: ui.colormap.value }];
      probe = (x, y) => {
        const { r, c, value } = layer.cell(x, y);
        const v = layer.upsampled()[y * w + x];
        return `${where(x, y)}: value ${fmt(v)}, scaled ${fmt(normalise(v, layer.lo, layer.hi))} · ` +
          `map cell (${r}, ${c}) = ${fmt(value)}`;
      };
    }
    const opacity = Number(ui.opacity.value);
    const threshold = Number(ui.threshold.value);
    return (canvas) => {
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
      }
      const context = canvas.getContext("2d", { willReadFrequently: true });
      if (image) context.drawImage(image, 0, 0, w, h);
      else {
        context.fillStyle = "#000";
        context.fillRect(0, 0, w, h);
      }
      if (overlay) {
        const [values, options] = overlay();
        const pixels = context.getImageData(0, 0, w, h);
        blend(pixels.data, values, { ...options, opacity, threshold });
        context.putImageData(pixels, 0, 0);
      }
      return probe;
    };
  };
}

// -- captions --------------------------------------------------------------------

function targetCaption(target) {
  if (!target) return "";
  const name = target.class_name ?? (target.class_id != null ? `class ${target.class_id}` : "custom target");
  const parts = [target.class_name != null && target.class_id != null ? `${name} (${target.class_id})` : name];
  if (target.prob != null) parts.push(`p=${target.prob.toFixed(3)}`);
  if (target.score != null) parts.push(`score=${target.score.toFixed(3)}`);
  return parts.join("  ");
}

function showMetrics(header) {
  const records = header?.metrics ?? [];
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

// -- the cards of each mode ------------------------------------------------------

/** What the controls choose: {image, target, method, layer}. */
function chosen() {
  return {
    image: Number(ui.image.value || 0),
    target: Number(ui.target.value || 0),
    method: ui.method.value,
    layer: ui.layer.value,
  };
}

/** The card list of the shown mode: [{caption, load, image?}] (`image`: the image a grid card selects). */
async function mainSpecs() {
  const sample = view.sample;
  const series = picker.current();
  const { run, tag } = series;
  const pick = chosen();
  const source = (changes = {}, from = sample) => {
    const want = { ...pick, ...changes };
    return { run, tag, sample: from, index: want.image, entry: findEntry(from, want) };
  };
  const header = sample.header;
  switch (ui.mode.value) {
    case "compare":
      return compareSpecs(source, header, pick, series);
    case "timeline":
      return [{ caption: `step ${picker.entry().step}`, load: async () => source() }];
    case "diff":
      return diffSpecs(source, pick, series);
    default:
      return header.images.map((info, i) => ({
        caption: targetCaption(info.targets[pick.target]),
        load: async () => source({ image: i }),
        image: i,
      }));
  }
}

function compareSpecs(source, header, pick, series) {
  const axis = ui.axis.value;
  if (axis === "method") return header.methods.map((m) => ({ caption: m, load: async () => source({ method: m }) }));
  if (axis === "layer") {
    return header.layers.map((l) => ({ caption: l || "(unnamed)", load: async () => source({ layer: l }) }));
  }
  if (axis === "target") {
    return header.images[pick.image].targets.map((t, k) => ({
      caption: targetCaption(t),
      load: async () => source({ target: k }),
    }));
  }
  return runSpecs(source, series);
}

/** The same tag in every run, at the shown step or, where a run has none, its last step before it. */
async function runSpecs(source, series) {
  const step = picker.entry().step;
  const runs = picker.series.filter((s) => s.tag === series.tag);
  const lists = await Promise.all(runs.map((s) => api.listSteps(s.run, s.tag)));
  return runs.flatMap((s, i) => {
    const { steps } = lists[i];
    const earlier = steps.filter((e) => e.step <= step);
    const entry = earlier[earlier.length - 1] ?? steps[0];
    if (!entry) return [];
    return {
      caption: entry.step === step ? `${s.run}  (step ${step})` : `${s.run}  (step ${entry.step}, nearest to ${step})`,
      load: async () => {
        const sample = await api.loadSample(s.run, s.tag, entry.step);
        if (sample.error) throw new Error(sample.error);
        return { ...source({}, sample), run: s.run };
      },
    };
  });
}

function diffSpecs(source, pick, series) {
  const here = source();
  const other = async () => {
    if (ui.against.value === "method") return source({ method: ui.vsMethod.value });
    const step = picker.steps[Number(ui.vsStep.value || 0)].step;
    const sample = await api.loadSample(series.run, series.tag, step);
    if (sample.error) throw new Error(sample.error);
    return source({}, sample);
  };
  const [a, b] =
    ui.against.value === "method"
      ? [pick.method, ui.vsMethod.value]
      : [`step ${picker.entry().step}`, `step ${picker.steps[Number(ui.vsStep.value || 0)].step}`];
  return [
    { caption: a, load: async () => here },
    { caption: b, load: other },
    {
      caption: `${a} − ${b}`,
      load: async () => {
        const there = await other();
        return { ...here, a: here, b: there };
      },
    },
  ];
}

/** Keeps `count` cards in `container`, reusing the existing ones. */
function ensureCards(cards, count, container, options) {
  while (cards.length > count) view.painter.forget(cards.pop());
  while (cards.length < count) cards.push(new Card(options));
  container.replaceChildren(...cards.map((c) => c.node));
  return cards;
}

function hover(text) {
  ui.readout.textContent = text;
}

/** Redraws the shown mode's cards; resolves when those in view are painted. */
async function drawMain() {
  const specs = await mainSpecs();
  ui.grid.classList.toggle("single", ui.mode.value === "timeline");
  const cards = ensureCards(view.mainCards, specs.length, ui.grid, { lens, onHover: hover });
  const pick = chosen();
  return Promise.all(
    specs.map((spec, i) => {
      const card = cards[i];
      card.setCaption(spec.caption);
      card.node.classList.toggle("selected", ui.mode.value === "grid" && spec.image === pick.image);
      card.node.onclick = spec.image == null ? null : () => chooseImage(spec.image);
      return view.painter.show(card, paintJob(spec.load));
    }),
  );
}

/** The filmstrip of the timeline: the chosen image's map at every loaded step, painted as it scrolls into view. */
function drawFilmstrip() {
  ui.filmstrip.hidden = ui.mode.value !== "timeline";
  view.stripKey = ui.filmstrip.hidden ? null : stripKey();
  if (ui.filmstrip.hidden) return;
  const { run, tag } = picker.current();
  const pick = chosen();
  const cards = ensureCards(view.stripCards, picker.steps.length, ui.filmstrip, { className: "card thumb" });
  markFilmstrip(); // scrolled to the chosen step before any picture is queued, so only those around it load
  picker.steps.forEach((entry, i) => {
    const card = cards[i];
    card.setCaption(`step ${entry.step}`);
    card.node.onclick = () => {
      picker.step.value = String(i);
      guarded(showStep)();
    };
    view.painter.show(
      card,
      paintJob(async () => {
        const sample = await api.loadSample(run, tag, entry.step);
        if (sample.error) throw new Error(sample.error);
        return { run, tag, sample, index: pick.image, entry: findEntry(sample, pick) };
      }, THUMBNAIL),
    );
  });
}

/** Everything the filmstrip's pictures depend on (not the chosen step). */
function stripKey() {
  const { run, tag } = picker.current();
  const controls = [ui.colormap, ui.opacity, ui.threshold, ui.norm, ui.upsample].map((c) => c.value);
  return JSON.stringify([run, tag, picker.steps.map((s) => s.step), chosen(), controls]);
}

function markFilmstrip() {
  const current = Number(picker.step.value);
  view.stripCards.forEach((card, i) => card.node.classList.toggle("current", i === current));
  view.stripCards[current]?.node.scrollIntoView({ block: "nearest", inline: "center" });
}

/** Redraws everything with the current controls (and saves them in the URL). */
function draw() {
  if (!view.sample || !picker.current()) return Promise.resolve();
  showControls();
  showMetrics(view.sample.header);
  save();
  drawFilmstrip();
  return drawMain();
}

function showControls() {
  const mode = ui.mode.value;
  const show = (control, visible) => (control.closest("label").hidden = !visible);
  show(ui.axis, mode === "compare");
  show(ui.against, mode === "diff");
  show(ui.vsStep, mode === "diff" && ui.against.value === "step");
  show(ui.vsMethod, mode === "diff" && ui.against.value === "method");
  show(ui.image, mode !== "grid");
}

// -- steps and samples ------------------------------------------------------------

export async function update(all) {
  const series = all.filter((s) => s.kind === "cam");
  ui.empty.hidden = series.length > 0;
  picker.setSeries(series);
  const { run, tag } = view.wanted;
  if (run && series.some((s) => s.run === run && (tag == null || s.tag === tag))) picker.choose(run, tag);
  delete view.wanted.run;
  delete view.wanted.tag;
  await loadSteps();
}

/** Opens a run and, when its samples have it, a layer (the Model view's links). */
export async function open(run, layer) {
  if (!picker.series.some((s) => s.run === run)) return;
  picker.choose(run);
  view.wanted.layer = layer;
  await loadSteps();
}

async function loadSteps() {
  view.sample = null; // nothing is drawn for the new series until its step is loaded
  view.token++; // and a step of the old one still loading is dropped
  const logged = await picker.loadSteps();
  if (logged === undefined) return; // a newer choice is loading
  if (!picker.current()) {
    ui.grid.replaceChildren();
    ui.filmstrip.replaceChildren();
    view.mainCards.splice(0).forEach((c) => view.painter.forget(c));
    view.stripCards.splice(0).forEach((c) => view.painter.forget(c));
    ui.notice.textContent = "";
    return;
  }
  takeWantedStep("step", picker.step);
  const loaded = picker.steps.length;
  ui.notice.textContent =
    logged != null && logged > loaded
      ? `Showing ${loaded} of ${logged} logged steps: TensorBoard dropped the others ` +
        "(its --samples_per_plugin setting for cam)."
      : "";
  setOptions(ui.vsStep, picker.steps.map((s, i) => [String(i), `step ${s.step}`]), ui.vsStep.value || "0");
  takeWantedStep("vs_step", ui.vsStep);
  await showStep();
}

/** Points `control` (a step index) at the URL's step number under `key`, when that step is loaded. */
function takeWantedStep(key, control) {
  const index = picker.steps.findIndex((s) => String(s.step) === view.wanted[key]);
  if (index >= 0) control.value = String(index);
  delete view.wanted[key];
}

/** Shows the chosen step; records the time from the call to the visible cards being painted ("cam:step"). */
async function showStep() {
  const series = picker.current();
  const entry = picker.entry();
  if (!series || !entry) return;
  const start = performance.now();
  const token = ++view.token;
  let sample;
  try {
    sample = await api.loadSample(series.run, series.tag, entry.step);
  } catch (error) {
    if (token === view.token) ui.notice.textContent = `Could not load step ${entry.step}: ${error.message}`;
    return;
  }
  if (token !== view.token || picker.current() !== series) return; // a newer request won
  if (sample.error) {
    view.sample = null;
    view.mainCards.splice(0).forEach((c) => view.painter.forget(c));
    ui.grid.replaceChildren(el("p", { className: "damaged", textContent: sample.error }));
    ui.grid.dataset.step = String(entry.step);
    return;
  }
  view.sample = sample;
  updateMapPickers(sample.header);
  showControls();
  showMetrics(sample.header);
  save();
  if (ui.mode.value === "timeline" && view.stripKey === stripKey()) markFilmstrip();
  else drawFilmstrip();
  await drawMain();
  if (token !== view.token) return;
  ui.grid.dataset.step = String(entry.step); // which step the grid shows (lets tests wait for a redraw)
  performance.measure("cam:step", { start, detail: { step: entry.step } });
  prefetchAhead(series, Number(picker.step.value));
}

/**
 * After a move by one step (arrow keys, Play), fetches the next step in that direction with the pictures
 * in view, so that it is ready when asked for. Jumps fetch nothing ahead: they would only fill the cache.
 */
function prefetchAhead(series, index) {
  const direction = index - view.lastIndex;
  view.lastIndex = index;
  const entry = Math.abs(direction) === 1 ? picker.steps[index + direction] : null;
  if (!entry) return;
  const images =
    ui.mode.value === "grid" ? view.mainCards.flatMap((card, i) => (card.visible ? [i] : [])) : [chosen().image];
  api
    .loadSample(series.run, series.tag, entry.step)
    .then((sample) => sample.error || Promise.all(images.map((i) => sample.image(i))))
    .catch(() => {}); // a failure shows when that step is chosen
}

/** Offers the sample's methods, layers, targets and images, keeping the choices (or the URL's) that still fit. */
function updateMapPickers(header) {
  const want = (key, control) => {
    const value = view.wanted[key] ?? control.value;
    delete view.wanted[key];
    return value;
  };
  setOptions(ui.method, header.methods.map((m) => [m, m]), want("method", ui.method));
  setOptions(ui.vsMethod, header.methods.map((m) => [m, m]), want("vs_method", ui.vsMethod));
  if (!view.vsMethodChosen && header.methods.length > 1 && ui.vsMethod.value === ui.method.value) {
    ui.vsMethod.value = header.methods.find((m) => m !== ui.method.value);
  }
  setOptions(ui.layer, header.layers.map((l) => [l, l || "(unnamed)"]), want("layer", ui.layer));
  const k = Math.max(0, ...header.images.map((i) => i.targets.length));
  const targets = Array.from({ length: k }, (_, j) => [String(j), k > 1 ? `target ${j + 1} (top-${j + 1})` : "target"]);
  setOptions(ui.target, targets, want("target", ui.target));
  const images = header.images.map((info, i) => [String(i), `image ${i + 1}: ${targetCaption(info.targets[0])}`]);
  setOptions(ui.image, images, want("image", ui.image));
}

function chooseImage(index) {
  if (index < 0 || index >= ui.image.options.length) return;
  ui.image.value = String(index);
  draw();
}

// -- play, download, keyboard, URL ---------------------------------------------------

async function play() {
  if (view.playing) {
    view.playing = false;
    return;
  }
  view.playing = true;
  ui.play.textContent = "Pause";
  try {
    if (Number(picker.step.value) >= Number(picker.step.max)) picker.step.value = "0";
    await showStep();
    while (view.playing && Number(picker.step.value) < Number(picker.step.max)) {
      const next = picker.steps[Number(picker.step.value) + 1];
      const series = picker.current();
      const ready = api.loadSample(series.run, series.tag, next.step); // fetch while the current one shows
      await Promise.all([ready, new Promise((resolve) => setTimeout(resolve, PLAY_INTERVAL_MS))]);
      if (!view.playing) break;
      picker.step.value = String(Number(picker.step.value) + 1);
      await showStep();
    }
  } finally {
    view.playing = false;
    ui.play.textContent = "Play";
  }
}

async function download() {
  const cards = view.mainCards.filter((c) => c.node.dataset.state === "painted");
  if (!cards.length) return;
  const blob = await composePng(cards, lens);
  const { run, tag } = picker.current();
  const name = `cam_${run}_${tag}_step${picker.entry().step}_${ui.mode.value}.png`.replace(/[^\w.-]+/g, "_");
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** Space plays or pauses (the arrow keys: see SeriesPicker.wire and bindOptionKeys). */
function bindPlayKey() {
  document.addEventListener("keydown", (event) => {
    if (node.hidden || !pageKey(event)) return;
    if (event.key === " " || event.key === "Spacebar") {
      event.preventDefault();
      guarded(play)();
    }
  });
}

const SAVED_CONTROLS = {
  mode: ui.mode,
  axis: ui.axis,
  against: ui.against,
  cmap: ui.colormap,
  opacity: ui.opacity,
  threshold: ui.threshold,
  norm: ui.norm,
  upsample: ui.upsample,
  zoom: ui.zoom,
};

/** Saves the view in the URL, a moment after the last change (browsers limit how often a URL may change). */
function save() {
  clearTimeout(view.saveTimer);
  view.saveTimer = setTimeout(saveNow, 150);
}

function saveNow() {
  const series = picker.current();
  const entry = picker.entry();
  const state = {
    run: series?.run,
    tag: series?.tag,
    step: entry?.step,
    image: ui.image.value,
    method: ui.method.value,
    layer: ui.layer.value,
    target: ui.target.value,
    vs_step: picker.steps[Number(ui.vsStep.value || 0)]?.step,
    vs_method: ui.vsMethod.value,
  };
  for (const [key, control] of Object.entries(SAVED_CONTROLS)) state[key] = control.value;
  urlstate.update(state);
}

/** Sets the display controls from the URL (values a control does not offer are ignored). */
function restoreControls(saved) {
  for (const [key, control] of Object.entries(SAVED_CONTROLS)) {
    const value = saved[key];
    if (value == null) continue;
    if (control instanceof HTMLSelectElement) {
      if ([...control.options].some((o) => o.value === value)) control.value = value;
    } else if (Number.isFinite(Number(value))) {
      control.value = String(Math.min(Math.max(Number(value), Number(control.min)), Number(control.max)));
    }
  }
  lens.setZoom(Number(ui.zoom.value));
}

function guarded(action) {
  return () => Promise.resolve(action()).catch((error) => view.onError(error));
}

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

/** Builds the view; `reload()` refreshes every view, `onError(error)` reports a failure. */
export function mount({ root, reload, onError }) {
  view.onError = onError;
  view.painter = new Painter(root);
  view.wanted = urlstate.read();
  setOptions(ui.mode, MODES, "grid");
  setOptions(ui.axis, AXES, "method");
  setOptions(ui.against, AGAINST, "step");
  setOptions(ui.colormap, COLORMAPS.map((c) => [c, c]), "jet");
  setOptions(ui.norm, [["map", "each map"], ["series", "whole series"]], "map");
  setOptions(ui.upsample, [["bilinear", "bilinear"], ["nearest", "nearest"]], "bilinear");
  setOptions(ui.zoom, [1, 2, 4, 8].map((z) => [String(z), `${z}×`]), "1");
  restoreControls(view.wanted);
  buildEmptyState();
  const series = el("div", { className: "toolbar" }, [...picker.controls("add_cam"), ui.play, ui.refresh]);
  const what = el("div", { className: "toolbar" }, [
    labelled("Mode", ui.mode, "Grid: every image · Compare: one image side by side · Timeline: one image over " +
      "every step · Difference: one map minus another"),
    labelled("Compare", ui.axis, "What the side-by-side cards differ in"),
    labelled("Against", ui.against, "What the map is subtracted from"),
    labelled("Other step", ui.vsStep, "The step subtracted from the shown one"),
    labelled("Other method", ui.vsMethod, "The method subtracted from the shown one"),
    labelled("Image", ui.image, "Which logged image (↑ and ↓ keys)"),
    labelled("Method", ui.method, "CAM method"),
    labelled("Layer", ui.layer, "Layer the map was computed at"),
    labelled("Target", ui.target, "Which of the explained classes to show"),
  ]);
  const how = el("div", { className: "toolbar" }, [
    labelled("Colour map", ui.colormap, "Colour map of the overlay"),
    labelled("Opacity", ui.opacity, "Opacity of the map over the picture"),
    labelled("Threshold", ui.threshold, "Hide the map where its scaled value is below this"),
    labelled("Scale", ui.norm, "Scale each map to its own min and max, or use one range over every step of " +
      "the series so that brightness compares across training"),
    labelled("Upsampling", ui.upsample, "How the map is enlarged to the picture"),
    labelled("Zoom", ui.zoom, "Enlarge the pictures; drag one to pan them all"),
    ui.download,
  ]);
  node.append(el("div", { className: "toolbars" }, [series, what, how]), ui.notice, ui.metrics, ui.readout, ui.empty, ui.grid, ui.filmstrip);

  picker.wire(guarded(loadSteps), guarded(showStep));
  const redraw = guarded(draw);
  for (const control of [ui.mode, ui.axis, ui.against, ui.vsStep, ui.image, ui.method, ui.layer, ui.target,
    ui.colormap, ui.norm, ui.upsample]) {
    control.addEventListener("change", redraw);
  }
  ui.vsMethod.addEventListener("change", () => {
    view.vsMethodChosen = true;
    redraw();
  });
  ui.opacity.addEventListener("input", redraw);
  ui.threshold.addEventListener("input", redraw);
  ui.zoom.addEventListener("change", () => {
    lens.setZoom(Number(ui.zoom.value));
    save();
  });
  ui.play.addEventListener("click", guarded(play));
  ui.download.addEventListener("click", guarded(download));
  ui.refresh.addEventListener("click", guarded(reload));
  bindPlayKey();
  bindOptionKeys(ui.image, redraw); // up and down: the image, where one image is shown
}
