/**
 * The plugin's routes, and the tab's caches of what they return. Every URL is
 * relative: the document's <base> is plugin/cam/ under TensorBoard's /data/,
 * which keeps --path_prefix and /experiment/<id>/ URLs working.
 */

function query(params) {
  return new URLSearchParams(params).toString();
}

async function getJson(path, params) {
  const response = await fetch(params ? `${path}?${query(params)}` : path);
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.json();
}

/** URL of a blob by its opaque key (used for <img> and fetch alike). */
const blobUrl = (key) => `./blob?${query({ key })}`;

/** A blob's bytes; `compressed` (the header's "compression" is "zlib") inflates them. */
async function getBuffer(key, compressed) {
  const response = await fetch(blobUrl(key));
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  if (!compressed) return response.arrayBuffer();
  return new Response(response.body.pipeThrough(new DecompressionStream("deflate"))).arrayBuffer();
}

/** Decodes a stored picture into a drawable <img>. */
async function getImage(key) {
  const image = new Image();
  image.src = blobUrl(key);
  await image.decode();
  return image;
}

/** A Map that forgets its least recently used entries beyond `limit`. */
class Recent extends Map {
  constructor(limit) {
    super();
    this.limit = limit;
  }

  get(key) {
    const value = super.get(key);
    if (value !== undefined) {
      super.delete(key);
      super.set(key, value);
    }
    return value;
  }

  set(key, value) {
    super.delete(key);
    super.set(key, value);
    while (this.size > this.limit) this.delete(this.keys().next().value);
    return this;
  }
}

/** Keeps one promise per key; a failed one is dropped so that the next call retries. */
function remember(cache, key, load) {
  let promise = cache.get(key);
  if (promise === undefined) {
    promise = load();
    promise.catch(() => cache.get(key) === promise && cache.delete(key));
    cache.set(key, promise);
  }
  return promise;
}

const stepLists = new Map(); // "run\0tag" -> Promise of /steps
const rangeLists = new Map(); // "run\0tag" -> Promise of /ranges
const samples = new Recent(128); // "run\0tag\0step" -> Promise of a sample

export const listSeries = () => getJson("./series");

/** The steps of a series ({steps, logged}); kept until `forget()`. */
export const listSteps = (run, tag) =>
  remember(stepLists, `${run}\u0000${tag}`, () => getJson("./steps", { run, tag }));

/** Each (method, layer)'s min and max over a CAM series (/ranges); kept until `forget()`. */
export const listRanges = (run, tag) =>
  remember(rangeLists, `${run}\u0000${tag}`, () => getJson("./ranges", { run, tag }).then((r) => r.ranges));

/** Drops what a reload may change (step lists and ranges); samples never change once written. */
export function forget() {
  stepLists.clear();
  rangeLists.clear();
}

/** Where each image's pictures start when some are clips (a clip's frames are its pictures); null otherwise. */
function firstPictures(images) {
  if (!Array.isArray(images) || !images.some((info) => info?.frames != null)) return null;
  let next = 0;
  return images.map((info) => {
    const first = next;
    next += info.frames ?? 1;
    return first;
  });
}

/**
 * A sample: {kind, header, model, maps, stats (ArrayBuffers), image(i), frame(i, t)} (`frame`: frame t of
 * clip i; `image(i)` is its first frame), or {error} for a damaged one.
 * The header and the small blobs come at once; each picture is fetched on its first `image(i)` (as it
 * comes into view) and kept with the sample. The newest samples are kept, so revisiting a step is free.
 */
export function loadSample(run, tag, step) {
  return remember(samples, `${run}\u0000${tag}\u0000${step}`, async () => {
    const data = await getJson("./sample", { run, tag, step: String(step) });
    if (data.error) return { error: data.error };
    const compressed = data.header?.compression === "zlib";
    const [maps, stats] = await Promise.all([
      data.maps_key ? getBuffer(data.maps_key, compressed) : null,
      data.stats_key ? getBuffer(data.stats_key, compressed) : null,
    ]);
    const keys = data.image_keys ?? [];
    const images = new Map();
    const picture = (i) => (i < keys.length ? remember(images, i, () => getImage(keys[i])) : Promise.resolve(null));
    const starts = firstPictures(data.header?.images);
    const frame = (i, t) => picture((starts?.[i] ?? i) + t); // frame t of clip i
    return { ...data, maps, stats, image: (i) => frame(i, 0), frame };
  });
}
