/** The view in the URL: saved a moment after each change, restored when the tab opens. */

import * as urlstate from "../urlstate.js";
import { lens, picker, ui, view } from "./state.js";

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
export function save() {
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
export function restoreControls(saved) {
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
