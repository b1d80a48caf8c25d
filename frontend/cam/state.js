/** The CAM view's controls and shared state, and what they choose (see index.js for the view). */

import { Lens } from "../cards.js";
import { el } from "../dom.js";
import { MEASURES, arrowed } from "../measures.js";
import { SeriesPicker } from "../picker.js";
import { Latest } from "../view.js";

export const MODES = [
  ["grid", "Grid"],
  ["compare", "Compare"],
  ["timeline", "Timeline"],
  ["diff", "Difference"],
];
export const AXES = [
  ["method", "methods"],
  ["layer", "layers"],
  ["target", "classes"],
  ["run", "runs"],
];
export const AGAINST = [
  ["step", "another step"],
  ["method", "another method"],
];
export const THUMBNAIL = 72; // filmstrip pictures are painted at most this many pixels wide or high
export const PLAY_INTERVAL_MS = 400;

export const picker = new SeriesPicker("");
export const lens = new Lens();

const select = (id) => el("select", { id });
export const ui = {
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
    title: "Save the shown cards as one PNG, as on screen: full resolution, with their colour scales, " +
      "captions, and the run, tag and step",
  }),
  notice: el("div", { id: "notice", className: "notice", role: "status" }),
  hint: el("div", { id: "hint", className: "metrics", role: "status" }),
  metrics: el("div", {
    id: "metrics",
    className: "metrics",
    title: "Faithfulness (add_cam(..., metrics=True)) and localization (regions=) of the shown method at this " +
      "layer, the random baseline's in brackets",
  }),
  description: el("div", { id: "description", className: "metrics", title: "What the maps explain (a target kind)" }),
  readout: el("div", { id: "readout", className: "value", title: "The map under the mouse" }),
  grid: el("div", { id: "grid", className: "grid" }),
  filmstrip: el("div", { id: "filmstrip", className: "filmstrip", hidden: true }),
  empty: el("div", { id: "empty", className: "empty", hidden: true }),
  // a clip's controls (clip.js), shown when the step holds clips
  frame: el("input", { id: "frame", type: "range", min: "0", max: "0", step: "1", value: "0" }),
  clipPlay: el("button", { id: "clip-play", type: "button", textContent: "Play clip", title: "Play the clip's frames" }),
  fps: el("input", { id: "fps", type: "number", min: "1", max: "60", step: "1", value: "8" }),
  frameLabel: el("span", { id: "frame-label", className: "value" }),
  frames: el("div", { id: "frames", className: "filmstrip", hidden: true }),
};

export const node = el("section", { id: "cam-view", className: "view" });
export const { notice } = ui;

export const view = {
  sample: null, // the shown step's sample
  latest: new Latest(), // the newest step request; older answers give way
  playing: false,
  wanted: {}, // state from the URL not applied yet (the options it names are not there yet)
  mainCards: [],
  stripCards: [],
  stripKey: null, // what the filmstrip was painted for
  frame: 0, // the clip frame shown (clip.js)
  frameCards: [], // the clip's frame strip
  clipPlaying: false,
  lastIndex: -1, // the step index shown before (to fetch ahead when moving one by one)
  vsMethodChosen: false, // the user picked the other method (else it follows the shown one)
  saveTimer: 0,
  painter: null,
  onError: () => {},
};

// -- what the controls choose -------------------------------------------------------

/** What the controls choose: {image, target, method, layer}. */
export function chosen() {
  return {
    image: Number(ui.image.value || 0),
    target: Number(ui.target.value || 0),
    method: ui.method.value,
    layer: ui.layer.value,
  };
}

export function findEntry(sample, { image, target, method, layer }) {
  return sample?.header?.maps.find(
    (m) => m.image === image && m.target === target && m.method === method && m.layer === layer,
  );
}


export function targetCaption(target) {
  if (!target) return "";
  const name = target.class_name ?? (target.class_id != null ? `class ${target.class_id}` : "custom target");
  const parts = [target.class_name != null && target.class_id != null ? `${name} (${target.class_id})` : name];
  if (target.prob != null) parts.push(`p=${target.prob.toFixed(3)}`);
  if (target.score != null) parts.push(`score=${target.score.toFixed(3)}`);
  return parts.join("  ");
}

/** The step's target description and the shown method's scores at the shown layer. */
export function showMetrics(header) {
  ui.description.textContent = header?.description ? `Explains: ${header.description}` : "";
  const records = header?.metrics ?? [];
  const find = (method) => records.find((r) => r.method === method && r.layer === ui.layer.value);
  const shown = find(ui.method.value);
  const baseline = find("random");
  const logged = shown ? MEASURES.filter((m) => shown[m.key] != null) : [];
  ui.metrics.textContent = logged
    .map((measure) => {
      const other = baseline && ui.method.value !== "random" ? baseline[measure.key] : null;
      const base = other != null ? ` (random ${other.toFixed(3)})` : "";
      return `${arrowed(measure)} ${shown[measure.key].toFixed(3)}${base}`;
    })
    .join("   ·   ");
}

export function showControls() {
  const mode = ui.mode.value;
  const show = (control, visible) => (control.closest("label").hidden = !visible);
  show(ui.axis, mode === "compare");
  show(ui.against, mode === "diff");
  show(ui.vsStep, mode === "diff" && ui.against.value === "step");
  show(ui.vsMethod, mode === "diff" && ui.against.value === "method");
  show(ui.image, mode !== "grid");
}
