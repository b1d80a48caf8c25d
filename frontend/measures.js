/** The numbers add_cam stores per method and layer, with the direction that is better and what each measures;
 * `low` and `high` give a range other than 0 to 1 (scores.py's, which the histograms of evaluate span). */

export const MEASURES = [
  {
    key: "average_drop",
    label: "Average drop",
    better: "lower",
    help: "How much the class probability drops when the image is multiplied by its normalised map " +
      "(Grad-CAM++ paper); a faithful map keeps what the model needs",
  },
  {
    key: "increase_in_confidence",
    label: "Increase in confidence",
    better: "higher",
    help: "Share of images whose class probability rises on the image multiplied by the map",
  },
  {
    key: "deletion_auc",
    label: "Deletion AUC",
    better: "lower",
    help: "Area under the probability curve as the most salient pixels are removed first (RISE paper)",
  },
  {
    key: "insertion_auc",
    label: "Insertion AUC",
    better: "higher",
    help: "Area under the probability curve as the most salient pixels are put into a blurred image first",
  },
  {
    key: "road_morf",
    label: "ROAD MoRF",
    better: "lower",
    low: -1,
    high: 1,
    help: "Change in class probability when the most relevant pixels are removed and filled in from their " +
      "neighbours (ROAD, Rong et al. 2022), averaged over 10%..90% kept",
  },
  {
    key: "road_lerf",
    label: "ROAD LeRF",
    better: "higher",
    low: -1,
    high: 1,
    help: "Change in class probability when the least relevant pixels are removed and filled in from their " +
      "neighbours, averaged over 10%..90% kept",
  },
  {
    key: "road_combined",
    label: "ROAD combined",
    better: "higher",
    low: -1,
    high: 1,
    help: "(LeRF - MoRF) / 2: removing what the map points at should hurt more than removing the rest",
  },
  {
    key: "coherency",
    label: "Coherency",
    better: "higher",
    help: "How well the map survives being computed again on the image multiplied by it: (r + 1) / 2 of the " +
      "two maps' correlation (Poppi et al. 2021)",
  },
  {
    key: "complexity",
    label: "Complexity",
    better: "lower",
    help: "The normalised map's mean: how much of the image it lights up",
  },
  {
    key: "adcc",
    label: "ADCC",
    better: "higher",
    help: "Harmonic mean of coherency, 1 - complexity and 1 - average drop, per image (Poppi et al. 2021)",
  },
  {
    key: "pointing_game",
    label: "Pointing game",
    better: "higher",
    help: "Share of maps whose maximum lies inside the logged object region (box or mask)",
  },
  {
    key: "energy_pointing_game",
    label: "Energy in region",
    better: "higher",
    help: "Share of each normalised map's mass inside the logged object region",
  },
];

/** A measure's label with its arrow: ↓ when lower is better, ↑ when higher is. */
export const arrowed = (measure) => `${measure.label} ${measure.better === "lower" ? "↓" : "↑"}`;
