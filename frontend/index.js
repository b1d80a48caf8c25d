/**
 * The "Activations & CAM" tab. TensorBoard imports this module inside the
 * tab's iframe and calls `render()` once.
 *
 * Every string that comes from logs (runs, tags, class names, errors) is set
 * with textContent; nothing is loaded from outside the plugin's own routes.
 */

import * as activations from "./activations.js";
import * as api from "./api.js";
import * as cam from "./cam/index.js";
import * as sanity from "./sanity.js";
import * as dataset from "./dataset.js";
import { el } from "./dom.js";
import { onDataReloaded } from "./host.js";
import * as methods from "./methods.js";
import * as model from "./model.js";
import * as runs from "./runs.js";
import * as theme from "./theme.js";
import * as urlstate from "./urlstate.js";

const VIEWS = [
  ["cam", "CAM", cam],
  ["activations", "Activations", activations],
  ["model", "Model", model],
  ["methods", "Methods", methods],
  ["checks", "Checks", sanity],
  ["dataset", "Data set", dataset],
];

const buttons = VIEWS.map(([name, text]) =>
  el("button", { id: `view-${name}`, type: "button", className: "view-button", textContent: text, dataset: { view: name } }),
);

/** Shows one view ("cam", "activations", "model", "methods", "checks" or "dataset"), marks its button and saves it in the URL. */
function showView(name) {
  const known = VIEWS.some(([view]) => view === name) ? name : "cam";
  for (const [view, , module] of VIEWS) module.node.hidden = view !== known;
  for (const button of buttons) button.classList.toggle("active", button.dataset.view === known);
  urlstate.update({ view: known === "cam" ? null : known });
}

let listed = []; // every series the backend listed at the last reload

/** Gives every view the series of the ticked runs and matching tags (the sidebar's choice). */
function updateViews() {
  return Promise.all(VIEWS.map(([, , module]) => module.update(runs.visible(listed))));
}

/** Reloads runs and tags for every view (the Refresh buttons and TensorBoard's own reload). */
async function reload() {
  api.forget();
  listed = (await api.listSeries()).series;
  runs.setSeries(listed);
  await updateViews();
}

export async function render() {
  document.head.append(
    el("link", { rel: "stylesheet", href: "./static/style.css" }), // theme, layout, controls
    el("link", { rel: "stylesheet", href: "./static/views.css" }), // the views' parts
  );
  theme.follow();
  const { sidebar, tagFilter } = runs.mount();
  const main = el("main", { className: "cam-tab" }, VIEWS.map(([, , module]) => module.node));
  const topbar = el("header", { className: "topbar" }, [
    el("nav", { className: "views", role: "tablist" }, buttons),
    tagFilter,
  ]);
  document.body.append(el("div", { className: "page" }, [sidebar, el("div", { className: "content" }, [topbar, main])]));
  const report = (notice) => (error) => (notice.textContent = `Error: ${error.message}`);
  const camError = report(cam.notice);
  const guardedReload = () => reload().catch(camError);
  for (const button of buttons) button.addEventListener("click", () => showView(button.dataset.view));
  cam.mount({ root: main, reload: guardedReload, onError: camError });
  activations.mount({ onError: report(activations.notice) });
  sanity.mount({ onError: report(sanity.notice) });
  methods.mount({
    onError: report(methods.notice),
    openCam: (where) => {
      showView("cam");
      return cam.show(where).catch(camError);
    },
  });
  dataset.mount({
    onError: report(dataset.notice),
    openCam: (where) => {
      showView("cam");
      return cam.show(where).catch(camError);
    },
  });
  model.mount({
    openActivations: (run, layer) => {
      showView("activations");
      return activations.open(run, layer);
    },
    openCam: (run, layer, tag) => {
      showView("cam");
      return cam.open(run, layer, tag).catch(camError);
    },
  });
  runs.onChange(() => updateViews().catch(camError));
  showView(urlstate.read().view);
  onDataReloaded(guardedReload); // TensorBoard's own reload button and auto-reload
  await guardedReload();
}
