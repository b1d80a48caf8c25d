/** Run, tag and step controls over a list of series: what the CAM and Activations views share. */

import * as api from "./api.js";
import { el, labelled, setOptions, setTagOptions } from "./dom.js";
import { Latest } from "./view.js";

/** Whether a key press is the page's: another input or select answers keys itself. */
export function pageKey(event) {
  return !(event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement);
}

/**
 * Calls `move(-1)` or `move(+1)` for the `back` or `forward` key while `control` is shown and the key is
 * the page's; `move` returns whether it moved.
 */
function bindKeys(control, back, forward, move) {
  document.addEventListener("keydown", (event) => {
    if (![back, forward].includes(event.key) || control.offsetParent === null || !pageKey(event)) return;
    if (move(event.key === forward ? 1 : -1)) event.preventDefault();
  });
}

/** Up and down arrow keys choose the previous or next option of `select` while it is shown. */
export function bindOptionKeys(select, onChange) {
  bindKeys(select, "ArrowUp", "ArrowDown", (delta) => {
    const next = select.selectedIndex + delta;
    if (next < 0 || next >= select.options.length) return false;
    select.selectedIndex = next;
    onChange();
    return true;
  });
}

export class SeriesPicker {
  /** `prefix` keeps element ids distinct per view ("" gives #run, #tag, #step, #step-label). */
  constructor(prefix) {
    this.run = el("select", { id: `${prefix}run` });
    this.tag = el("select", { id: `${prefix}tag` });
    this.step = el("input", { id: `${prefix}step`, type: "range", min: "0", max: "0", value: "0" });
    this.stepLabel = el("span", { id: `${prefix}step-label`, className: "step-label" });
    this.series = [];
    this.steps = [];
    this.latest = new Latest(); // the newest loadSteps call
  }

  /** The labelled run, tag and step controls for a toolbar; `writer` names the call that logs the tag. */
  controls(writer) {
    return [
      labelled("Run", this.run, "Run (a folder of event files)"),
      labelled("Tag", this.tag, `Tag given to ${writer}`),
      labelled("Step", this.step, "Training step of the logged sample"),
      this.stepLabel,
    ];
  }

  /** Calls `loadSteps()` when the run or tag changes and `showStep()` when the step does (slider or arrow keys). */
  wire(loadSteps, showStep) {
    this.run.addEventListener("change", () => {
      this.updateTags();
      loadSteps();
    });
    this.tag.addEventListener("change", loadSteps);
    this.step.addEventListener("input", showStep);
    this.bindArrowKeys(showStep);
  }

  /** Left and right arrow keys move the step while this picker is shown; `onChange` redraws. */
  bindArrowKeys(onChange) {
    bindKeys(this.step, "ArrowLeft", "ArrowRight", (delta) => {
      const next = Number(this.step.value) + delta;
      if (next < 0 || next > Number(this.step.max)) return false;
      this.step.value = String(next);
      onChange();
      return true;
    });
  }

  /** Shows these series' runs, keeping the chosen run and tag when they are still there. */
  setSeries(series) {
    this.series = series;
    setOptions(this.run, [...new Set(series.map((s) => s.run))].map((r) => [r, r]), this.run.value);
    this.updateTags();
  }

  updateTags() {
    const tags = this.series.filter((s) => s.run === this.run.value).map((s) => [s.tag, s.tag]);
    setTagOptions(this.tag, tags, this.tag.value);
  }

  /** Chooses a run (and its first tag unless `tag` is given). */
  choose(run, tag) {
    this.run.value = run;
    this.updateTags();
    const first = this.series.find((s) => s.run === run)?.tag;
    if (tag ?? first) this.tag.value = tag ?? first;
  }

  current() {
    return this.series.find((s) => s.run === this.run.value && s.tag === this.tag.value);
  }

  /** The chosen step's {step, wall_time}, with the label updated; undefined when there is none. */
  entry() {
    const entry = this.steps[Number(this.step.value)];
    if (entry) this.stepLabel.textContent = `step ${entry.step} (${Number(this.step.value) + 1} of ${this.steps.length})`;
    return entry;
  }

  /**
   * Loads the chosen series' steps; the slider follows the newest step when it was at the end.
   * Returns how many samples were logged (see /steps), null without a series, or undefined when
   * another series was chosen meanwhile (its own call wins; the caller should stop).
   */
  async loadSteps() {
    const series = this.current();
    const ticket = this.latest.next();
    if (!series) {
      this.steps = [];
      return null;
    }
    const { steps, logged, kept_by: keptBy } = await api.listSteps(series.run, series.tag);
    if (!this.latest.isCurrent(ticket)) return undefined;
    this.keptBy = keptBy; // who dropped steps, if any were: "tensorboard" or the plugin's "budget"
    const atEnd = Number(this.step.value) >= this.steps.length - 1;
    this.steps = steps;
    this.step.max = String(Math.max(steps.length - 1, 0));
    if (atEnd) this.step.value = this.step.max;
    this.step.disabled = steps.length < 2;
    return logged;
  }
}
