/**
 * Map arithmetic for the tab: upsample maps exactly like
 * torch.nn.functional.interpolate ("bilinear" with align_corners=False, or
 * "nearest"), normalise, colour and blend over the picture.
 */

import { lut } from "./colormaps.js";

const axes = new Map(); // "in,out,mode" -> source indices and weights along one axis

/**
 * Source indices and weight along one axis, as torch computes them: for "bilinear" with
 * align_corners=False, for "nearest" floor(d * in / out) with weight 0 (the first source only).
 */
export function axisWeights(inSize, outSize, mode) {
  const key = `${inSize},${outSize},${mode}`;
  if (!axes.has(key)) {
    const scale = inSize / outSize;
    const i0 = new Int32Array(outSize);
    const i1 = new Int32Array(outSize);
    const w1 = new Float32Array(outSize);
    for (let d = 0; d < outSize; d++) {
      if (mode === "nearest") {
        i0[d] = i1[d] = Math.min(Math.floor(d * scale), inSize - 1);
        continue;
      }
      const src = Math.max(scale * (d + 0.5) - 0.5, 0);
      const lo = Math.min(Math.floor(src), inSize - 1);
      i0[d] = lo;
      i1[d] = lo < inSize - 1 ? lo + 1 : lo;
      w1[d] = src - lo;
    }
    if (axes.size > 256) axes.clear();
    axes.set(key, { i0, i1, w1 });
  }
  return axes.get(key);
}

/**
 * Upsamples an (h, w) map to (outH, outW) like torch.nn.functional.interpolate with
 * mode "bilinear" (align_corners=False) or "nearest"; writes into `out` when given (no allocation).
 */
export function upsample(values, h, w, outH, outW, mode = "bilinear", out = new Float32Array(outH * outW)) {
  const ys = axisWeights(h, outH, mode);
  const xs = axisWeights(w, outW, mode);
  for (let y = 0; y < outH; y++) {
    const r0 = ys.i0[y] * w;
    const r1 = ys.i1[y] * w;
    const wy = ys.w1[y];
    for (let x = 0; x < outW; x++) {
      const a = xs.i0[x];
      const b = xs.i1[x];
      const wx = xs.w1[x];
      const top = values[r0 + a] * (1 - wx) + values[r0 + b] * wx;
      const bottom = values[r1 + a] * (1 - wx) + values[r1 + b] * wx;
      out[y * outW + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return out;
}

/** Min and max of a map. */
export function range(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** A map's value scaled to [0, 1] by [lo, hi] (a flat map reads 0). */
export function normalise(value, lo, hi) {
  return hi > lo ? Math.min(Math.max((value - lo) / (hi - lo), 0), 1) : 0;
}

/**
 * Blends a coloured map over RGBA `pixels` (an ImageData's data, same size as
 * the map) in place. Values are scaled to [0, 1] by [lo, hi] and looked up in
 * the named colour map; opacity in [0, 1]. Pixels whose
 * strength is below `threshold` keep the picture; the strength is the scaled
 * value, or for a `centered` (signed, diverging) map its distance from the middle.
 */
export function blend(pixels, values, { lo, hi, colormap, opacity, threshold = 0, centered = false }) {
  const table = lut(colormap);
  const count = pixels.length / 4; // `values` may be a longer scratch buffer
  for (let i = 0; i < count; i++) {
    const t = normalise(values[i], lo, hi);
    if ((centered ? Math.abs(2 * t - 1) : t) < threshold) continue;
    const c = Math.round(t * 255) * 3;
    const p = 4 * i;
    pixels[p] = pixels[p] * (1 - opacity) + table[c] * opacity;
    pixels[p + 1] = pixels[p + 1] * (1 - opacity) + table[c + 1] * opacity;
    pixels[p + 2] = pixels[p + 2] * (1 - opacity) + table[c + 2] * opacity;
  }
}
