/** The cards of each mode: what each card of Grid, Compare, Timeline and Difference shows. */

import * as api from "../api.js";
import { chosen, findEntry, picker, targetCaption, ui, view } from "./state.js";

/** The card list of the shown mode: [{caption, load, image?}] (`image`: the image a grid card selects). */
export async function mainSpecs() {
  const sample = view.sample;
  const series = picker.current();
  const { run, tag } = series;
  const pick = chosen();
  const source = (changes = {}, from = sample) => {
    const want = { ...pick, ...changes };
    return { run, tag, sample: from, index: want.image, entry: findEntry(from, want) };
  };
  const header = sample.header;
  switch (ui.mode.value) {
    case "compare":
      return compareSpecs(source, header, pick, series);
    case "timeline":
      return [{ caption: `step ${picker.entry().step}`, load: async () => source() }];
    case "diff":
      return diffSpecs(source, pick, series);
    default:
      return header.images.map((info, i) => ({
        caption: targetCaption(info.targets[pick.target]),
        load: async () => source({ image: i }),
        image: i,
      }));
  }
}

function compareSpecs(source, header, pick, series) {
  const axis = ui.axis.value;
  if (axis === "method") return header.methods.map((m) => ({ caption: m, load: async () => source({ method: m }) }));
  if (axis === "layer") {
    return header.layers.map((l) => ({ caption: l || "(unnamed)", load: async () => source({ layer: l }) }));
  }
  if (axis === "target") {
    return header.images[pick.image].targets.map((t, k) => ({
      caption: targetCaption(t),
      load: async () => source({ target: k }),
    }));
  }
  return runSpecs(source, series);
}

/** The same tag in every run, at the shown step or, where a run has none, its last step before it. */
async function runSpecs(source, series) {
  const step = picker.entry().step;
  const runs = picker.series.filter((s) => s.tag === series.tag);
  const lists = await Promise.all(runs.map((s) => api.listSteps(s.run, s.tag)));
  return runs.flatMap((s, i) => {
    const { steps } = lists[i];
    const earlier = steps.filter((e) => e.step <= step);
    const entry = earlier[earlier.length - 1] ?? steps[0];
    if (!entry) return [];
    return {
      caption: entry.step === step ? `${s.run}  (step ${step})` : `${s.run}  (step ${entry.step}, nearest to ${step})`,
      run: s.run,
      load: async () => {
        const sample = await api.loadSample(s.run, s.tag, entry.step);
        if (sample.error) throw new Error(sample.error);
        const found = { ...source({}, sample), run: s.run };
        if (!found.entry) throw new Error(missingMap(sample.header, chosen(), s.run, entry.step));
        return found;
      },
    };
  });
}

/** Why a run has no map for the shown method and layer: what it lacks and what it logged instead. */
function missingMap(header, pick, run, step) {
  const list = (values) => values.map((v) => v || "(unnamed)").join(", ");
  if (!header.layers.includes(pick.layer)) {
    return `${run} logged no map at layer ${pick.layer || "(unnamed)"} (step ${step} has: ${list(header.layers)})`;
  }
  if (!header.methods.includes(pick.method)) {
    return `${run} logged no ${pick.method} map (step ${step} has: ${list(header.methods)})`;
  }
  return `${run} has no map for this image and target at step ${step}`;
}

/** A hint when Compare has a single card: what to log or tick to get more; "" otherwise. */
export function compareHint(count) {
  if (ui.mode.value !== "compare" || count > 1) return "";
  const hints = {
    method: "Only one method was logged: add_cam(..., methods=(\"gradcam\", \"scorecam\")) logs several.",
    layer: "Only one layer was logged: add_cam(..., target_layer=[\"layer3\", \"layer4\"]) logs several.",
    target: "Only one class was explained: add_cam(..., topk=3) explains the three likeliest.",
    run: "Only one ticked run has this tag: tick more runs in the sidebar (or log the tag in another run).",
  };
  return hints[ui.axis.value] ?? "";
}

function diffSpecs(source, pick, series) {
  const here = source();
  const other = async () => {
    if (ui.against.value === "method") return source({ method: ui.vsMethod.value });
    const step = picker.steps[Number(ui.vsStep.value || 0)].step;
    const sample = await api.loadSample(series.run, series.tag, step);
    if (sample.error) throw new Error(sample.error);
    return source({}, sample);
  };
  const [a, b] =
    ui.against.value === "method"
      ? [pick.method, ui.vsMethod.value]
      : [`step ${picker.entry().step}`, `step ${picker.steps[Number(ui.vsStep.value || 0)].step}`];
  return [
    { caption: a, load: async () => here },
    { caption: b, load: other },
    {
      caption: `${a} − ${b}`,
      load: async () => {
        const there = await other();
        return { ...here, a: here, b: there };
      },
    },
  ];
}
