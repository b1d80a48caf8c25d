/** Run, tag and step controls over a list of series: what the CAM and Activations views share. */

import * as api from "./api.js";
import { el, labelled, setOptions } from "./dom.js";

export class SeriesPicker {
  /** `prefix` keeps element ids distinct per view ("" gives #run, #tag, #step, #step-label). */
  constructor(prefix) {
    this.run = el("select", { id: `${prefix}run` });
    this.tag = el("select", { id: `${prefix}tag` });
    this.step = el("input", { id: `${prefix}step`, type: "range", min: "0", max: "0", value: "0" });
    this.stepLabel = el("span", { id: `${prefix}step-label`, className: "step-label" });
    this.series = [];
    this.steps = [];
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

  /**
   * Left and right arrow keys move the step while this picker is visible and no other control has the
   * keyboard (the slider itself already answers them); `onChange` redraws.
   */
  bindArrowKeys(onChange) {
    document.addEventListener("keydown", (event) => {
      if (!["ArrowLeft", "ArrowRight"].includes(event.key) || this.step.offsetParent === null) return;
      if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
      const next = Number(this.step.value) + (event.key === "ArrowRight" ? 1 : -1);
      if (next < 0 || next > Number(this.step.max)) return;
      event.preventDefault();
      this.step.value = String(next);
      onChange();
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
    setOptions(this.tag, tags, this.tag.value);
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
    const token = (this.token = (this.token ?? 0) + 1);
    if (!series) {
      this.steps = [];
      return null;
    }
    const { steps, logged } = await api.listSteps(series.run, series.tag);
    if (token !== this.token) return undefined;
    const atEnd = Number(this.step.value) >= this.steps.length - 1;
    this.steps = steps;
    this.step.max = String(Math.max(steps.length - 1, 0));
    if (atEnd) this.step.value = this.step.max;
    this.step.disabled = steps.length < 2;
    return logged;
  }
}
