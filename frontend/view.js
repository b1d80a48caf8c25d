/**
 * What the views share when they load a step: a guard that drops answers overtaken by a newer
 * request, and loading the sample a picker points at.
 */

import * as api from "./api.js";

/** Hands out tickets; only the newest is current, so a slow answer to an older request is dropped. */
export class Latest {
  constructor() {
    this.ticket = 0;
  }

  /** A new ticket: every ticket handed out before it stops being current. */
  next() {
    return ++this.ticket;
  }

  isCurrent(ticket) {
    return ticket === this.ticket;
  }
}

/**
 * After a new choice of series: loads its steps into the picker, then shows the chosen step
 * (`show()`), or empties the view (`clear()`) when no series is left. A step of the previous series
 * still loading is dropped, and nothing happens when a newer choice came first.
 */
export async function loadSeriesSteps(picker, latest, { clear, show }) {
  latest.next();
  if ((await picker.loadSteps()) === undefined) return; // a newer choice is loading
  if (!picker.current()) {
    clear();
    return;
  }
  await show();
}

/**
 * The sample of the picker's chosen step: {series, entry, sample, ticket}, or {…, error} when it could
 * not be fetched; null when nothing is chosen or a newer request (another step, another series) came
 * first. `ticket` stays current until the next request: a view checks it again after slow drawing.
 */
export async function loadChosenSample(picker, latest) {
  const series = picker.current();
  const entry = picker.entry();
  if (!series || !entry) return null;
  const ticket = latest.next();
  let sample = null;
  let error = null;
  try {
    sample = await api.loadSample(series.run, series.tag, entry.step);
  } catch (failure) {
    error = failure;
  }
  if (!latest.isCurrent(ticket) || picker.current() !== series) return null;
  return { series, entry, sample, error, ticket };
}
