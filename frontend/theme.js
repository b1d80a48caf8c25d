/**
 * The tab's light or dark theme, following TensorBoard's own setting live.
 *
 * TensorBoard (2.15-2.21) marks its effective theme with the class `dark-mode` on its page's body
 * (its dark-mode-supporter toggles it from the setting: light, dark, or the browser default read from
 * prefers-color-scheme). The tab's iframe is same-origin, so it reads that class and watches it with
 * a MutationObserver. Opened on its own (plugin_entry.html) or under a cross-origin parent, the tab
 * follows the browser's prefers-color-scheme instead. The theme is `data-theme` on our <html>; the
 * colours are CSS variables (style.css), which canvases read through `cssColor`.
 */

const listeners = new Set();

/** TensorBoard's page body, or null when the tab is on its own or the parent cannot be read. */
function hostBody() {
  try {
    if (window.parent !== window) return window.parent.document.body ?? null;
  } catch {
    // a cross-origin parent
  }
  return null;
}

function apply(dark) {
  const theme = dark ? "dark" : "light";
  if (document.documentElement.dataset.theme === theme) return;
  document.documentElement.dataset.theme = theme;
  for (const listener of listeners) listener(theme);
}

/** "dark" or "light": the theme shown now. */
export function current() {
  return document.documentElement.dataset.theme === "dark" ? "dark" : "light";
}

/** Calls `listener(theme)` whenever the theme changes (views redraw their canvases). */
export function onThemeChange(listener) {
  listeners.add(listener);
}

/** A CSS variable of the current theme (`--fg`, `--grid`, ...), for drawing on canvases. */
export function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Starts following TensorBoard's theme (or the browser's preference without TensorBoard). */
export function follow() {
  const body = hostBody();
  if (body) {
    const read = () => apply(body.classList.contains("dark-mode"));
    new MutationObserver(read).observe(body, { attributes: true, attributeFilter: ["class"] });
    read();
    return;
  }
  const query = window.matchMedia("(prefers-color-scheme: dark)");
  query.addEventListener("change", () => apply(query.matches));
  apply(query.matches);
}
