/**
 * A clip's map upsampled in time and space exactly as torch.nn.functional.interpolate with mode
 * "trilinear" (align_corners=False), or "nearest" on each axis: one output frame at a time, since a
 * playing clip shows one frame. Torch's trilinear weights are separable, so output frame f is the
 * blend (1 - w) A + w B of the two source frames' bilinear upsamplings, A and B.
 */

import { axisWeights, upsample } from "./maps.js";

let below = new Float32Array(0); // scratch: the upsampled later source frame
let above = new Float32Array(0);

/**
 * Output frame `f` (of `outT`) of a (t, h, w) map upsampled to (outT, outH, outW); "bilinear" (the tab's
 * control) means trilinear here. Writes into `out` when given.
 */
export function upsampleFrame(values, t, h, w, f, outT, outH, outW, mode = "bilinear", out = null) {
  const size = outH * outW;
  const result = out ?? new Float32Array(size);
  const { i0, i1, w1 } = axisWeights(t, outT, mode);
  const frame = (k) => values.subarray(k * h * w, (k + 1) * h * w);
  if (below.length < size) {
    below = new Float32Array(size);
    above = new Float32Array(size);
  }
  upsample(frame(i0[f]), h, w, outH, outW, mode, below);
  const wt = w1[f];
  if (wt === 0) {
    result.set(below.subarray(0, size));
    return result;
  }
  upsample(frame(i1[f]), h, w, outH, outW, mode, above);
  for (let i = 0; i < size; i++) result[i] = below[i] * (1 - wt) + above[i] * wt;
  return result;
}

/** The stored map cell output frame `f` (of `outT`) comes from in time, as "nearest" picks it. */
export function sourceFrame(t, f, outT) {
  return Math.min(Math.floor((f * t) / outT), t - 1);
}

/** The whole (outT, outH, outW) upsampling, frame after frame (what the browser test compares with torch). */
export function upsample3d(values, t, h, w, outT, outH, outW, mode = "bilinear") {
  const out = new Float32Array(outT * outH * outW);
  for (let f = 0; f < outT; f++) {
    upsampleFrame(values, t, h, w, f, outT, outH, outW, mode, out.subarray(f * outH * outW, (f + 1) * outH * outW));
  }
  return out;
}
