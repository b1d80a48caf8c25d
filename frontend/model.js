/**
 * The Model view: the table logged by add_model_summary (every module with its type, shapes and
 * parameters), searchable, each row linking to that layer's activations and CAMs.
 */

import * as api from "./api.js";
import { el, labelled, setOptions } from "./dom.js";
import { shapeText } from "./format.js";

const state = { series: [], cams: [], camLayers: new Map(), table: null, links: {} };

const ui = {
  run: el("select", { id: "model-run" }),
  search: el("input", { id: "model-search", type: "search", placeholder: "Search layers and types" }),
  totals: el("div", { id: "model-totals", className: "metrics" }),
  body: el("tbody", { id: "model-rows" }),
  empty: el("div", { id: "model-empty", className: "empty", hidden: true }),
};

export const node = el("section", { id: "model-view", className: "view", hidden: true });

export async function update(all) {
  state.series = all.filter((s) => s.kind === "model");
  state.cams = all.filter((s) => s.kind === "cam");
  ui.empty.hidden = state.series.length > 0;
  setOptions(ui.run, state.series.map((s) => [s.run, s.run]), ui.run.value);
  await load();
}

/**
 * The layers with maps logged in `run`: layer name -> the CAM tag that has it (from each CAM series'
 * newest step), so that a row's CAM button opens that layer's maps.
 */
async function camLayers(run) {
  const layers = new Map();
  const found = await Promise.all(
    state.cams.filter((s) => s.run === run).map(async (s) => {
      const sample = await api.loadSample(s.run, s.tag, s.max_step);
      return [s.tag, sample.header?.layers ?? []];
    }),
  );
  for (const [tag, names] of found) for (const name of names) if (!layers.has(name)) layers.set(name, tag);
  return layers;
}

async function load() {
  const series = state.series.find((s) => s.run === ui.run.value);
  state.table = null;
  state.camLayers = series ? await camLayers(series.run) : new Map();
  if (series) {
    const data = await api.loadSample(series.run, series.tag, series.max_step);
    state.table = data.header ?? null;
    if (data.error) ui.body.replaceChildren(el("tr", {}, [el("td", { className: "damaged", textContent: data.error })]));
  }
  drawRows();
  ui.body.dataset.run = series?.run ?? ""; // whose table is shown (lets tests wait for it)
}

function drawRows() {
  const table = state.table;
  if (!table) {
    ui.totals.textContent = "";
    return;
  }
  const root = table.modules[0];
  ui.totals.textContent =
    `${root.params.toLocaleString("en")} parameters, ${root.trainable.toLocaleString("en")} trainable, ` +
    `${(root.params - root.trainable).toLocaleString("en")} not`;
  const query = ui.search.value.trim().toLowerCase();
  const rows = table.modules
    .filter((m) => !query || m.name.toLowerCase().includes(query) || m.type.toLowerCase().includes(query))
    .map((m) => {
      const toActivations = el("button", { type: "button", className: "to-activations", textContent: "activations" });
      const camTag = state.camLayers.get(m.name);
      const toCam = el("button", { type: "button", className: "to-cam", textContent: "CAM",
        title: `Maps logged at ${m.name} (tag ${camTag})` });
      toActivations.addEventListener("click", () => state.links.openActivations(ui.run.value, m.name));
      toCam.addEventListener("click", () => state.links.openCam(ui.run.value, m.name, camTag));
      const name = el("td", { className: "name", textContent: m.name || "(model)" });
      name.style.paddingLeft = `${4 + 12 * m.depth}px`;
      return el("tr", { dataset: { layer: m.name } }, [
        name,
        el("td", { textContent: m.type }),
        el("td", { textContent: shapeText(m.input_shape) }),
        el("td", { textContent: shapeText(m.output_shape) }),
        el("td", { className: "number", textContent: m.params.toLocaleString("en") }),
        el("td", { className: "number", textContent: m.trainable.toLocaleString("en") }),
        el("td", {}, m.name ? [toActivations, ...(camTag !== undefined ? [toCam] : [])] : []),
      ]);
    });
  ui.body.replaceChildren(...rows);
}

export function mount(links) {
  state.links = links;
  ui.empty.append(
    el("h2", { textContent: "No model summary logged yet" }),
    el("pre", { textContent: 'SummaryWriter("runs/exp").add_model_summary(model, example_images)' }),
  );
  const head = el("tr", {}, ["Layer", "Type", "Input shape", "Output shape", "Parameters", "Trainable", ""].map(
    (text) => el("th", { textContent: text }),
  ));
  const table = el("table", { id: "model-table", className: "model-table" }, [el("thead", {}, [head]), ui.body]);
  node.append(
    el("div", { className: "toolbar" }, [labelled("Run", ui.run, "Run with a model summary"), ui.search]),
    ui.totals,
    ui.empty,
    table,
  );
  ui.run.addEventListener("change", () => load().catch((e) => (ui.totals.textContent = `Error: ${e.message}`)));
  ui.search.addEventListener("input", drawRows);
}
