/** How a card is painted: a map decoded, scaled, upsampled and blended over its picture, with the value under the mouse. */

import * as api from "../api.js";
import { Card } from "../cards.js";
import { DIVERGING } from "../colormaps.js";
import { decodeMap } from "../format.js";
import { formatValue as number, scaleLegend } from "../legend.js";
import { blend, normalise, range, upsample } from "../maps.js";
import { outlineRegion } from "../regions.js";
import { sourceFrame, upsampleFrame } from "../trilinear.js";
import { ui, view } from "./state.js";

const decoded = new WeakMap(); // sample -> Map(offset -> raw values)

function rawValues(sample, entry) {
  if (!decoded.has(sample)) decoded.set(sample, new Map());
  const cache = decoded.get(sample);
  if (!cache.has(entry.offset)) cache.set(entry.offset, decodeMap(sample.maps, entry));
  return cache.get(entry.offset);
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
 * A clip's map (entry "frames") is drawn at output frame `clip.frame` of the clip's `clip.frames`,
 * upsampled in time too (trilinear.js); its scale is the whole clip's.
 */
async function layerOf(source, w, h, clip = null) {
  const { entry } = source;
  const raw = rawValues(source.sample, entry);
  const [lo, hi] = await scaleOf(source, raw);
  let values = null;
  const upsampled = () => (values ??= resample(raw, entry, w, h, clip));
  const cell = (x, y) => {
    const r = Math.min(Math.floor((y * entry.height) / h), entry.height - 1);
    const c = Math.min(Math.floor((x * entry.width) / w), entry.width - 1);
    const t = clip ? sourceFrame(entry.frames, clip.frame, clip.frames) : 0;
    return { t, r, c, value: raw[(t * entry.height + r) * entry.width + c] };
  };
  return { raw, entry, lo, hi, upsampled, cell, clip };
}

function resample(raw, entry, w, h, clip, out = undefined) {
  if (!clip) return upsample(raw, entry.height, entry.width, h, w, ui.upsample.value, out);
  return upsampleFrame(raw, entry.frames, entry.height, entry.width, clip.frame, clip.frames, h, w,
    ui.upsample.value, out);
}

let scratch = new Float32Array(0); // one map upsampled for drawing; reused, so a redraw allocates nothing

function upsampledForDrawing(layer, w, h) {
  if (scratch.length < w * h) scratch = new Float32Array(w * h);
  return resample(layer.raw, layer.entry, w, h, layer.clip, scratch);
}

/**
 * A card's job (see cards.Painter): `load()` gives {run, tag, sample, index, entry} or, for a
 * difference, {…, a, b} with two such sources; `maxSize` shrinks filmstrip pictures. The card shows
 * the map's colour scale and the image's object region, when one was logged. A clip shows frame
 * `frame` (default: the clip controls' frame, `view.frame`), its map at that frame.
 */
export function paintJob(load, maxSize = Infinity, frame = null) {
  return async () => {
    const source = await load();
    const { sample, index } = source;
    const info = sample.header.images[index];
    const f = Math.min(1, maxSize / Math.max(info.width, info.height));
    const w = Math.max(1, Math.round(info.width * f));
    const h = Math.max(1, Math.round(info.height * f));
    const shown = Math.min(frame ?? view.frame, (info.frames ?? 1) - 1);
    const clip = info.frames == null ? null : { frames: info.frames, frame: shown };
    const image = clip ? await sample.frame(index, clip.frame) : await sample.image(index);
    const at = clip ? `frame ${clip.frame}, ` : "";
    const where = (x, y) => `${at}pixel (${Math.floor(x / f)}, ${Math.floor(y / f)})`;
    let overlay = null; // () => [values, blend options], run when drawing
    let scale = null; // the legend's {lo, hi, colormap, centered, label}
    let probe = (x, y) => `${where(x, y)}: no map`;
    if (source.a && source.b) {
      const [a, b] = await Promise.all([layerOf(source.a, w, h, clip), layerOf(source.b, w, h, clip)]);
      const scaled = (layer, i) => normalise(layer.upsampled()[i], layer.lo, layer.hi);
      let difference = null;
      const values = () => (difference ??= a.upsampled().map((_, i) => scaled(a, i) - scaled(b, i)));
      overlay = () => [values(), { lo: -1, hi: 1, colormap: DIVERGING, centered: true }];
      scale = { lo: -1, hi: 1, colormap: DIVERGING, centered: true, label: "difference of the maps scaled to [0, 1]" };
      probe = (x, y) => {
        const i = y * w + x;
        return `${where(x, y)}: difference ${number(values()[i])} = ${number(scaled(a, i))} − ${number(scaled(b, i))} ` +
          "(each scaled to [0, 1])";
      };
    } else if (source.entry) {
      const layer = await layerOf(source, w, h, clip);
      const flat = layer.lo === layer.hi; // a constant map (all zero: no evidence at this layer) is not coloured
      overlay = flat ? null : () => [upsampledForDrawing(layer, w, h), { lo: layer.lo, hi: layer.hi, colormap: ui.colormap.value }];
      const label = ui.norm.value === "series" ? "the series' range of this method and layer" : "this map's range";
      scale = { lo: layer.lo, hi: layer.hi, colormap: ui.colormap.value, label, flat: flatText(layer.lo) };
      probe = (x, y) => {
        const { t, r, c, value } = layer.cell(x, y);
        const v = layer.upsampled()[y * w + x];
        const cellAt = clip ? `(${t}, ${r}, ${c})` : `(${r}, ${c})`;
        return `${where(x, y)}: value ${number(v)}, scaled ${number(normalise(v, layer.lo, layer.hi))} · ` +
          `map cell ${cellAt} = ${number(value)}`;
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
      if (info.region) outlineRegion(context, info.region, w, h);
      return { probe, legend: scale && scaleLegend({ ...scale, threshold }) };
    };
  };
}

/** The note a constant map shows instead of its colour scale. */
function flatText(value) {
  return value === 0
    ? "This map is 0 everywhere: nothing at this layer raises the explained score for this class, so no colour is drawn"
    : `This map is ${number(value)} everywhere: it singles out no place, so no colour is drawn`;
}

/** Keeps `count` cards in `container`, reusing the existing ones. */
export function ensureCards(cards, count, container, options) {
  while (cards.length > count) view.painter.forget(cards.pop());
  while (cards.length < count) cards.push(new Card(options));
  container.replaceChildren(...cards.map((c) => c.node));
  return cards;
}

function hover(text) {
  ui.readout.textContent = text;
}
