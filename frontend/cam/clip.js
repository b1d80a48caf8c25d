/**
 * A clip's controls in the CAM view: play/pause, a frame slider, the frame rate, and the frame strip under
 * the cards (the chosen clip's frames with its map). Every card shows frame `view.frame` (paint.js).
 */

import { el, labelled } from "../dom.js";
import { ensureCards, paintJob } from "./paint.js";
import { THUMBNAIL, chosen, findEntry, picker, ui, view } from "./state.js";

/** The frame count of the shown step's clips (the most of any), or 0 when it holds no clips. */
export function clipFrames(header = view.sample?.header) {
  return Math.max(0, ...(header?.images ?? []).map((info) => info.frames ?? 0));
}

/** The clip toolbar (hidden until a step holds clips). */
export function clipToolbar() {
  return el("div", { className: "toolbar", id: "clip-bar", hidden: true }, [
    ui.clipPlay,
    labelled("Frame", ui.frame, "Which frame of the clip the cards show (the map upsampled in time to it)"),
    ui.frameLabel,
    labelled("Frames a second", ui.fps, "How fast Play clip shows the frames"),
  ]);
}

/** Shows the clip controls for the shown step, keeping the frame where it still exists. */
export function showClip() {
  const frames = clipFrames();
  ui.clipPlay.closest(".toolbar").hidden = frames === 0;
  ui.frames.hidden = frames === 0;
  if (!frames) {
    view.clipPlaying = false;
    return;
  }
  view.frame = Math.min(view.frame, frames - 1);
  ui.frame.max = String(frames - 1);
  ui.frame.value = String(view.frame);
  ui.frameLabel.textContent = `${view.frame + 1} / ${frames}`;
}

/** The frame strip: every frame of the chosen clip with its map, the shown one marked; a click shows it. */
export function drawFrameStrip(onChoose) {
  const frames = clipFrames();
  if (!frames || !view.sample) return;
  const sample = view.sample;
  const { run, tag } = picker.current();
  const pick = chosen();
  const count = sample.header.images[pick.image]?.frames ?? 0;
  const cards = ensureCards(view.frameCards, count, ui.frames, { className: "card thumb" });
  cards.forEach((card, t) => {
    card.setCaption(`frame ${t + 1}`);
    card.node.onclick = () => onChoose(t);
    view.painter.show(card, paintJob(async () => ({ run, tag, sample, index: pick.image, entry: findEntry(sample, pick) }),
      THUMBNAIL, t));
  });
  markFrame();
}

export function markFrame() {
  view.frameCards.forEach((card, t) => card.node.classList.toggle("current", t === view.frame));
}

/**
 * Fetches every frame of the shown step's clips (each is kept with its sample), so that playing waits on no
 * fetch: the first time through a clip, each frame's fetch otherwise delays its showing (bench/bench_video.py).
 * A frame that fails is left to its card to report.
 */
function fetchFrames(sample = view.sample) {
  const images = sample?.header?.images ?? [];
  return Promise.all(images.flatMap((info, i) =>
    Array.from({ length: info.frames ?? 0 }, (_, t) => sample.frame(i, t).catch(() => null))));
}

/**
 * Plays or pauses the clip: `showFrame(t)` draws frame t; waits 1/fps between frames, after each is drawn.
 * Each play is numbered, so a play paused while its frames load, then played again, leaves one loop running.
 */
export async function playClip(showFrame) {
  if (view.clipPlaying) {
    view.clipPlaying = false;
    return;
  }
  const run = (view.clipRun = (view.clipRun ?? 0) + 1);
  const current = () => view.clipPlaying && view.clipRun === run;
  view.clipPlaying = true;
  ui.clipPlay.textContent = "Pause clip";
  try {
    await fetchFrames();
    while (current() && clipFrames() > 0) {
      const rate = Math.min(Math.max(Number(ui.fps.value) || 8, 1), 60);
      const started = performance.now();
      await showFrame((view.frame + 1) % clipFrames());
      const left = 1000 / rate - (performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, Math.max(left, 0)));
    }
    if (view.clipRun !== run) return; // a newer play runs: it owns the button
    if (clipFrames() > 0) await showFrame(view.frame); // paused: the timeline's steps too, at this frame
  } finally {
    if (view.clipRun === run) {
      view.clipPlaying = false;
      ui.clipPlay.textContent = "Play clip";
    }
  }
}

/**
 * Wires the clip controls: `drawCards()` redraws the main cards (at `view.frame`), `drawSteps()` the
 * timeline's filmstrip of steps (each step's clip at `view.frame`; not while playing, which shows one clip),
 * `onError` reports a failure. Returns `showFrame(t)`, which shows frame t (the frame strip's clicks call it).
 */
export function wireClip(drawCards, drawSteps, onError) {
  const showFrame = (t) => {
    view.frame = t;
    ui.frame.value = String(t);
    ui.frameLabel.textContent = `${t + 1} / ${clipFrames()}`;
    markFrame();
    if (!view.clipPlaying) drawSteps();
    return drawCards();
  };
  ui.frame.addEventListener("input", () => showFrame(Number(ui.frame.value)).catch(onError));
  ui.clipPlay.addEventListener("click", () => playClip(showFrame).catch(onError));
  return (t) => showFrame(t).catch(onError);
}
