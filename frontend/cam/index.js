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
 *
 * This module loads steps and mounts the view; state.js holds the controls and what they choose,
 * modes.js the cards of each mode, paint.js how a card is painted, filmstrip.js the timeline's
 * filmstrip and link.js the view in the URL.
 */

import * as api from "../api.js";
import { Painter } from "../cards.js";
import { COLORMAPS } from "../colormaps.js";
import { el, labelled, setOptions } from "../dom.js";
import { composePng } from "../export.js";
import { colourOf } from "../runs.js";
import { bindOptionKeys, pageKey } from "../picker.js";
import * as urlstate from "../urlstate.js";
import { loadChosenSample } from "../view.js";
import { clipToolbar, drawFrameStrip, showClip, wireClip } from "./clip.js";
import { drawFilmstrip, markFilmstrip, stripKey } from "./filmstrip.js";
import { restoreControls, save } from "./link.js";
import { compareHint, mainSpecs } from "./modes.js";
import { ensureCards, paintJob } from "./paint.js";
import {
  AGAINST,
  AXES,
  MODES,
  PLAY_INTERVAL_MS,
  chosen,
  lens,
  node,
  picker,
  showControls,
  showMetrics,
  targetCaption,
  ui,
  view,
} from "./state.js";

export { node, notice } from "./state.js";

// -- drawing ------------------------------------------------------------------------

const CAPTION_HELP =
  "p: the model's probability for the class (softmax) · score: the model output the map explains " +
  "(the class's logit, before softmax)";

function hover(text) {
  ui.readout.textContent = text;
}

/** Redraws the shown mode's cards; resolves when those in view are painted. */
async function drawMain() {
  const specs = await mainSpecs();
  ui.grid.classList.toggle("single", ui.mode.value === "timeline");
  const cards = ensureCards(view.mainCards, specs.length, ui.grid, { lens, onHover: hover });
  ui.hint.textContent = compareHint(specs.length);
  const pick = chosen();
  const { run } = picker.current();
  return Promise.all(
    specs.map((spec, i) => {
      const card = cards[i];
      card.setCaption(spec.caption, CAPTION_HELP);
      card.node.style.setProperty("--run-colour", colourOf(spec.run ?? run));
      card.node.dataset.run = spec.run ?? run;
      card.node.classList.toggle("selected", ui.mode.value === "grid" && spec.image === pick.image);
      card.node.onclick = spec.image == null ? null : () => chooseImage(spec.image);
      return view.painter.show(card, paintJob(spec.load));
    }),
  );
}

/**
 * In the timeline, shrinks the one card until it and the filmstrip below it fit in the window's height
 * (a `reset` first gives it back its full size, after the window grew).
 */
function fitTimeline(reset = false) {
  if (reset) ui.grid.style.removeProperty("--single-size");
  const card = ui.grid.querySelector(".card canvas");
  if (ui.mode.value !== "timeline" || ui.filmstrip.hidden || !card?.width) return;
  const main = node.closest("main");
  const over = ui.filmstrip.getBoundingClientRect().bottom - (main.getBoundingClientRect().bottom - 12);
  if (over <= 0) return;
  const width = ui.grid.querySelector(".card").getBoundingClientRect().width;
  const shrink = Math.ceil(over / (card.height / card.width)); // the picture's height follows its width
  ui.grid.style.setProperty("--single-size", `${Math.max(120, Math.floor(width - shrink))}px`);
}

/** Redraws everything with the current controls (and saves them in the URL). */
function draw() {
  if (!view.sample || !picker.current()) return Promise.resolve();
  showControls();
  showMetrics(view.sample.header);
  save();
  drawFilmstrip(chooseStep);
  showClip();
  drawFrameStrip(view.chooseFrame);
  return drawMain();
}

/** Shows the filmstrip's step `index` (a click on its thumbnail). */
function chooseStep(index) {
  picker.step.value = String(index);
  guarded(showStep)();
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

/** Opens a run's tag (or its first) at a layer its samples have (the Model view's links). */
export async function open(run, layer, tag) {
  if (!picker.series.some((s) => s.run === run)) return;
  picker.choose(run, tag);
  view.wanted.layer = layer;
  await loadSteps();
}

/** Shows one step's maps of a method and layer (the Methods view's rows). */
export async function show({ run, tag, step, method, layer }) {
  if (!picker.series.some((s) => s.run === run && s.tag === tag)) return;
  Object.assign(view.wanted, { step: String(step), method, layer });
  picker.choose(run, tag);
  await loadSteps();
}

async function loadSteps() {
  view.sample = null; // nothing is drawn for the new series until its step is loaded
  view.latest.next(); // and a step of the old one still loading is dropped
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
      ? `Showing ${loaded} of ${logged} logged steps: ` +
        (picker.keptBy === "budget"
          ? "this server's memory budget keeps no more of a series whose steps hold this many blobs " +
            "(--cam_memory_budget_mb)."
          : "TensorBoard dropped the others (its --samples_per_plugin setting for cam).")
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
  const start = performance.now();
  const shown = await loadChosenSample(picker, view.latest);
  if (!shown) return; // nothing chosen, or a newer request won
  const { series, entry, sample, error, ticket } = shown;
  if (error) {
    ui.notice.textContent = `Could not load step ${entry.step}: ${error.message}`;
    return;
  }
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
  else drawFilmstrip(chooseStep);
  showClip();
  drawFrameStrip(view.chooseFrame);
  await drawMain();
  if (!view.latest.isCurrent(ticket)) return;
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

// -- play, download, keyboard -------------------------------------------------------

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

/** The exported picture's title: where the maps come from and what the cards show. */
function exportTitle(run, tag) {
  const mode = ui.mode.options[ui.mode.selectedIndex]?.textContent ?? ui.mode.value;
  const parts = [`run ${run}`, `tag ${tag}`, `step ${picker.entry().step}`, mode];
  const pick = chosen();
  if (!(ui.mode.value === "compare" && ui.axis.value === "method")) parts.push(`method ${pick.method}`);
  if (!(ui.mode.value === "compare" && ui.axis.value === "layer")) parts.push(`layer ${pick.layer || "(unnamed)"}`);
  if (ui.mode.value === "compare") parts.push(`comparing ${ui.axis.options[ui.axis.selectedIndex]?.textContent}`);
  return parts.join(" · ");
}

async function download() {
  const cards = view.mainCards.filter((c) => c.node.dataset.state === "painted");
  if (!cards.length) return;
  const { run, tag } = picker.current();
  const { blob, layout } = await composePng(cards, lens, exportTitle(run, tag));
  ui.download.dataset.layout = JSON.stringify(layout); // where each card went (lets tests check the picture)
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
  node.append(el("div", { className: "toolbars" }, [series, what, how, clipToolbar()]), ui.notice, ui.hint,
    ui.description, ui.metrics, ui.readout, ui.empty, ui.grid, ui.frames, ui.filmstrip);
  view.chooseFrame = wireClip(drawMain, () => drawFilmstrip(chooseStep), view.onError);

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
  window.addEventListener("resize", () => fitTimeline(true));
  // A card painted, its legend shown, thumbnails loaded, or a line above the card (a notice, the metrics)
  // shown after it: each moves the filmstrip.
  const refit = new ResizeObserver(() => fitTimeline());
  for (const part of [ui.notice, ui.hint, ui.description, ui.metrics, ui.readout, ui.grid, ui.filmstrip]) {
    refit.observe(part);
  }
  bindOptionKeys(ui.image, redraw); // up and down: the image, where one image is shown
}
