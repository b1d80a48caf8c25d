/**
 * The plugin's routes. Every URL is relative: the document's <base> is
 * plugin/cam/ under TensorBoard's /data/, which keeps --path_prefix and
 * /experiment/<id>/ URLs working.
 */

function query(params) {
  return new URLSearchParams(params).toString();
}

async function getJson(path, params) {
  const response = await fetch(params ? `${path}?${query(params)}` : path);
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.json();
}

export const listSeries = () => getJson("./series");
export const listSteps = (run, tag) => getJson("./steps", { run, tag });
export const getSample = (run, tag, step) => getJson("./sample", { run, tag, step: String(step) });

/** URL of a blob by its opaque key (used for <img> and fetch alike). */
export const blobUrl = (key) => `./blob?${query({ key })}`;

export async function getBuffer(key) {
  const response = await fetch(blobUrl(key));
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.arrayBuffer();
}

/** Decodes a stored picture into an ImageBitmap-like drawable. */
export async function getImage(key) {
  const image = new Image();
  image.src = blobUrl(key);
  await image.decode();
  return image;
}

const samples = new Map(); // "run\0tag\0step" -> Promise of the sample with its blobs

/**
 * A sample with every blob it names: {kind, header, model, maps, stats (ArrayBuffers), images}, or
 * {error} for a damaged one. Kept, so that revisiting a step costs nothing; a failed load is retried.
 */
export function loadSample(run, tag, step) {
  const key = `${run}\u0000${tag}\u0000${step}`;
  if (!samples.has(key)) {
    const loading = (async () => {
      const data = await getSample(run, tag, step);
      if (data.error) return { error: data.error };
      const [maps, stats, images] = await Promise.all([
        data.maps_key ? getBuffer(data.maps_key) : null,
        data.stats_key ? getBuffer(data.stats_key) : null,
        Promise.all((data.image_keys ?? []).map(getImage)),
      ]);
      return { ...data, maps, stats, images };
    })();
    loading.catch(() => samples.delete(key));
    samples.set(key, loading);
  }
  return samples.get(key);
}
