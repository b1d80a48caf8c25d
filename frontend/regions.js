/**
 * The object regions logged with `add_cam(regions=...)`: boxes or a run-length encoded mask per image,
 * in input pixels, drawn as an outline over the picture the map lies on.
 */

/** A region's mask as a Uint8Array of size[0] x size[1] (runs alternate, the first of pixels outside). */
export function decodeMask(region) {
  const [h, w] = region.size;
  const mask = new Uint8Array(h * w);
  let at = 0;
  region.mask.forEach((run, i) => {
    if (i % 2 === 1) mask.fill(1, at, Math.min(at + run, mask.length));
    at += run;
  });
  return mask;
}

/** Outlines `region` on a w x h canvas (the picture scaled from the region's input size): white over black. */
export function outlineRegion(context, region, w, h) {
  const [rh, rw] = region.size;
  if (region.boxes) {
    // through the centres of each box's edge pixels: a crisp white line on them, black either side
    context.save();
    for (const [colour, line] of [["#000", 3], ["#fff", 1]]) {
      context.strokeStyle = colour;
      context.lineWidth = line;
      for (const [x0, y0, x1, y1] of region.boxes) {
        const left = Math.round((x0 * w) / rw);
        const top = Math.round((y0 * h) / rh);
        const width = Math.max(Math.round((x1 * w) / rw) - left - 1, 0);
        const height = Math.max(Math.round((y1 * h) / rh) - top - 1, 0);
        context.strokeRect(left + 0.5, top + 0.5, width, height);
      }
    }
    context.restore();
    return;
  }
  // the mask at the canvas' size (each pixel takes the mask cell under its centre), then its edge pixels white
  const mask = decodeMask(region);
  const scaled = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    const row = Math.min(Math.floor(((y + 0.5) * rh) / h), rh - 1) * rw;
    for (let x = 0; x < w; x++) scaled[y * w + x] = mask[row + Math.min(Math.floor(((x + 0.5) * rw) / w), rw - 1)];
  }
  const inside = (x, y) => x >= 0 && y >= 0 && x < w && y < h && scaled[y * w + x] === 1;
  const pixels = context.getImageData(0, 0, w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (!inside(x, y)) continue;
      if (inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1)) continue;
      pixels.data.set([255, 255, 255, 255], 4 * (y * w + x));
    }
  }
  context.putImageData(pixels, 0, 0);
}
