/**
 * Reading what the backend serves, in one place: the float16 maps blob, an activation step's
 * statistics and channel maps, and the shapes of the model table (docs/FORMAT.md is the contract).
 */

/** The order of the statistics in an activation step's stats blob. */
export const STATS = ["mean", "std", "min", "max", "zeros"];

/** IEEE half-precision bits to a JS number. */
function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/**
 * One map from a maps blob, {height, width, offset, scale}: raw values, Float32Array of height*width
 * (a clip's map, with "frames": frames*height*width, frame after frame).
 */
export function decodeMap(buffer, entry) {
  const count = (entry.frames ?? 1) * entry.height * entry.width;
  const view = new DataView(buffer, entry.offset, count * 2);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true)) * entry.scale;
  return out;
}

/** One activation block's per-channel statistics: an array of {mean, std, min, max, zeros}. */
export function decodeStats(buffer, block) {
  const view = new DataView(buffer, block.stats_offset, block.channels * STATS.length * 4);
  return Array.from({ length: block.channels }, (_, c) =>
    Object.fromEntries(STATS.map((name, k) => [name, view.getFloat32(4 * (c * STATS.length + k), true)])),
  );
}

/** The stored channel maps of an activation block: [{channel, values}] in stored order. */
export function decodeBlockMaps(buffer, block) {
  const size = block.map_height * block.map_width * 2;
  return block.map_channels.map((channel, j) => ({
    channel,
    values: decodeMap(buffer, {
      height: block.map_height,
      width: block.map_width,
      offset: block.maps_offset + j * size,
      scale: block.scales[j],
    }),
  }));
}

/** A shape from the model table as text: "[8, 64, 56, 56]"; a one-argument call's list is unwrapped; "–" if none. */
export function shapeText(shape) {
  if (shape == null) return "–";
  if (!Array.isArray(shape)) return JSON.stringify(shape);
  const inner = shape.length === 1 && Array.isArray(shape[0]) ? shape[0] : shape;
  return `[${inner.map((d) => (Array.isArray(d) ? shapeText(d) : d)).join(", ")}]`;
}
