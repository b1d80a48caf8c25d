/**
 * Colour-scale legends: what a colour means. A bar of the colour map with the values at its ends
 * (the map's own range, or the series' range) and the threshold below which the map is hidden.
 */

import { lut } from "./colormaps.js";
import { el } from "./dom.js";

/** A value as short text: four decimals, or exponent notation for very large and very small values. */
export function formatValue(v) {
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toFixed(4);
}

/**
 * Several values in one format, so that a legend never mixes `3.979e-4` with `0.0026`: fixed decimals
 * enough for four significant digits of the largest, or exponent notation for all when the largest is
 * very large or very small.
 */
export function formatValues(values) {
  const largest = Math.max(...values.map((v) => Math.abs(v)));
  if (largest === 0) return values.map(() => "0");
  if (largest >= 1e5 || largest < 1e-4) return values.map((v) => v.toExponential(3));
  const decimals = Math.min(Math.max(3 - Math.floor(Math.log10(largest)), 0), 7);
  return values.map((v) => v.toFixed(decimals));
}

/** Paints the colour map into a 1-pixel-high canvas of `width` (stretched by CSS). */
function bar(colormap, width = 128) {
  const canvas = el("canvas", { className: "scale-bar", width, height: 1 });
  const table = lut(colormap);
  const pixels = new ImageData(width, 1);
  for (let x = 0; x < width; x++) {
    const c = Math.round((x / (width - 1)) * 255) * 3;
    pixels.data.set([table[c], table[c + 1], table[c + 2], 255], 4 * x);
  }
  canvas.getContext("2d").putImageData(pixels, 0, 0);
  return canvas;
}

/**
 * A legend element. `lo`, `hi`: the values at the ends of the colour map; `threshold` in [0, 1] of
 * that span (values below are not drawn; for a `centered` map, the distance from the middle);
 * `label`: what the range is ("map", "series", ...); `ends`: texts for the two ends instead of the
 * numbers; `flat`: the note shown instead of a scale when lo equals hi. The numbers are also in data attributes.
 */
export function scaleLegend({ lo, hi, colormap, threshold = 0, centered = false, label = "", ends = null, flat = null }) {
  if (!ends && lo === hi) return flatNote(lo, flat);
  const [loText, hiText] = formatValues([lo, hi]);
  const track = el("div", { className: "scale-track" }, [bar(colormap)]);
  const node = el("div", { className: "scale", dataset: { lo: String(lo), hi: String(hi) } }, [
    el("span", { className: "scale-lo", textContent: ends ? ends[0] : loText }),
    track,
    el("span", { className: "scale-hi", textContent: ends ? ends[1] : hiText }),
  ]);
  const span = hi - lo;
  let title = ends ? label : `${label ? `${label}: ` : ""}colours span ${loText} to ${hiText}`;
  if (threshold > 0) {
    // the values hidden: below lo + t * span, or (centered) within t * span / 2 of the middle
    const cuts = centered ? [0.5 - threshold / 2, 0.5 + threshold / 2] : [threshold];
    for (const t of cuts) {
      const mark = el("span", { className: "scale-threshold" });
      mark.style.left = `${Math.min(Math.max(t, 0), 1) * 100}%`;
      track.append(mark);
    }
    const values = cuts.map((t) => lo + t * span);
    node.dataset.threshold = values.map(String).join(",");
    const texts = formatValues([lo, hi, ...values]).slice(2);
    title += centered
      ? `; values between ${texts[0]} and ${texts[1]} are hidden`
      : `; values below ${texts[0]} are hidden`;
  }
  node.title = title;
  return node;
}

/** What a constant map's legend says instead of a scale from a value to itself (`text`: the caller's words). */
function flatNote(value, text) {
  const words = text ?? `Every value is ${formatValue(value)}: a constant map has no colour scale`;
  return el("div", { className: "scale flat-map", textContent: words, dataset: { lo: String(value), hi: String(value) } });
}
