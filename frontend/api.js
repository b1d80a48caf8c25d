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
