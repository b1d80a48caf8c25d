/**
 * The tab's state in the page's URL, so that a link opens the same view.
 *
 * Inside TensorBoard the state lives in the host page's hash as
 * `p.cam.<key>=<value>` entries beside TensorBoard's own (`#cam&p.cam.run=train&…`),
 * the form TensorBoard keeps for plugins (its experimental.GetURLPluginData reads
 * them). The iframe is same-origin, so it reads and rewrites that hash directly,
 * with history.replaceState: no navigation, no new history entry. Opened on its
 * own (plugin_entry.html), the tab uses its own hash the same way.
 */

const PREFIX = "p.cam.";

function host() {
  try {
    if (window.parent !== window && window.parent.location.href) return window.parent;
  } catch {
    // a cross-origin parent: keep the state in our own URL
  }
  return window;
}

/** decodeURIComponent that leaves a malformed escape as it is. */
function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function parts(hash) {
  return hash.replace(/^#/, "").split("&").filter((p) => p !== "");
}

/** The saved state: {key: string}. */
export function read() {
  const state = {};
  for (const part of parts(host().location.hash)) {
    const eq = part.indexOf("=");
    const key = decode(part.slice(0, eq));
    if (eq > 0 && key.startsWith(PREFIX)) state[key.slice(PREFIX.length)] = decode(part.slice(eq + 1));
  }
  return state;
}

/** Replaces the saved state with `state` ({key: string}); TensorBoard's own hash entries are kept. */
export function write(state) {
  const target = host();
  const own = parts(target.location.hash).filter((p) => !decode(p).startsWith(PREFIX));
  const ours = Object.entries(state)
    .filter(([, value]) => value != null && value !== "")
    .map(([key, value]) => `${encodeURIComponent(PREFIX + key)}=${encodeURIComponent(value)}`);
  const hash = [...own, ...ours].join("&");
  const url = new URL(target.location.href);
  url.hash = hash;
  if (url.href !== target.location.href) target.history.replaceState(target.history.state, "", url.href);
}


/** Changes some keys of the saved state (a null or empty value removes its key). */
export function update(changes) {
  write({ ...read(), ...changes });
}
