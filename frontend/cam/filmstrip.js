/** The timeline's filmstrip: one thumbnail per loaded step. */

import * as api from "../api.js";
import { ensureCards, paintJob } from "./paint.js";
import { THUMBNAIL, chosen, findEntry, picker, ui, view } from "./state.js";

/**
 * The filmstrip of the timeline: the chosen image's map at every loaded step (a clip's at the shown frame),
 * painted as it scrolls into view; clicking one calls `onChoose(index)`.
 */
export function drawFilmstrip(onChoose) {
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
    card.node.onclick = () => onChoose(i);
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
export function stripKey() {
  const { run, tag } = picker.current();
  const controls = [ui.colormap, ui.opacity, ui.threshold, ui.norm, ui.upsample].map((c) => c.value);
  return JSON.stringify([run, tag, picker.steps.map((s) => s.step), chosen(), controls]);
}

export function markFilmstrip() {
  const current = Number(picker.step.value);
  view.stripCards.forEach((card, i) => card.node.classList.toggle("current", i === current));
  const thumb = view.stripCards[current]?.node;
  // centred by scrolling the strip sideways only: scrollIntoView would also scroll the page
  if (thumb) ui.filmstrip.scrollLeft = thumb.offsetLeft - (ui.filmstrip.clientWidth - thumb.offsetWidth) / 2;
}
