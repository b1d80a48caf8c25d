/**
 * Download PNG: the shown cards as one picture, as they are on screen. Each card at the size it is
 * shown (times the screen's pixel ratio, never below the picture's own resolution), the part in view
 * under the lens, its colour scale with the numbers at its ends (or its note), its whole caption, and a
 * title line naming the run, tag, step and what the cards show; in the theme's colours.
 */

import { cssColor } from "./theme.js";

const FONT = "Roboto, system-ui, sans-serif";
const GAP = 16;
const PAD = 16;

/** `text` broken into lines no wider than `width` (at the context's font). */
function wrap(context, text, width) {
  const lines = [];
  let line = "";
  for (const word of String(text).split(/\s+/)) {
    const next = line ? `${line} ${word}` : word;
    if (line && context.measureText(next).width > width) {
      lines.push(line);
      line = word;
    } else line = next;
  }
  if (line) lines.push(line);
  return lines;
}

/** How many cards share the first card's row on screen (at least 1). */
function columnsOnScreen(cards) {
  const top = cards[0].node.getBoundingClientRect().top;
  return Math.max(1, cards.filter((c) => Math.abs(c.node.getBoundingClientRect().top - top) < 2).length);
}

/** What one card adds below its picture: [kind, payload] rows, measured at `width`. */
function legendOf(card) {
  const bar = card.legend.querySelector("canvas.scale-bar");
  if (bar) {
    const lo = card.legend.querySelector(".scale-lo")?.textContent ?? "";
    const hi = card.legend.querySelector(".scale-hi")?.textContent ?? "";
    return { bar, lo, hi, note: null };
  }
  const note = card.legend.textContent.trim();
  return { bar: null, note: note || null };
}

/**
 * The cards as one PNG: {blob, layout}, where layout is {title, width, height, cells: [{x, y, width,
 * height, bar}]} (each picture's place, and its colour bar's row or null). `title`: the line above the
 * cards (run, tag, step, mode). The caller's cards are the painted ones in their on-screen order.
 */
export function composePng(cards, lens, title) {
  const shown = cards.filter((c) => c.canvas.width > 0);
  if (!shown.length) return Promise.resolve({ blob: null, layout: null });
  const ratio = window.devicePixelRatio || 1;
  const columns = Math.min(columnsOnScreen(shown), shown.length);
  const cellW = Math.max(...shown.map((c) => Math.max(c.canvas.width, Math.round(c.viewport.getBoundingClientRect().width * ratio))));
  const scale = Math.max(1, cellW / 240); // text grows with the pictures
  const text = Math.round(12 * scale);
  const measure = document.createElement("canvas").getContext("2d");
  measure.font = `${text}px ${FONT}`;
  const line = Math.round(text * 1.35);
  const cells = shown.map((card) => {
    const pictureH = Math.round((cellW * card.canvas.height) / card.canvas.width);
    const legend = legendOf(card);
    const noteLines = legend.note ? wrap(measure, legend.note, cellW) : [];
    const captionLines = wrap(measure, card.caption.textContent, cellW);
    const legendH = legend.bar ? Math.round(10 * scale) + line : noteLines.length * line;
    return { card, pictureH, legend, noteLines, captionLines, height: pictureH + 6 + legendH + captionLines.length * line };
  });
  const rows = [];
  for (let i = 0; i < cells.length; i += columns) rows.push(cells.slice(i, i + columns));
  const rowH = rows.map((row) => Math.max(...row.map((c) => c.height)));
  const titleLines = wrap(measure, title, columns * cellW + (columns - 1) * GAP);
  const top = PAD + titleLines.length * line + 8;
  const out = document.createElement("canvas");
  out.width = 2 * PAD + columns * cellW + (columns - 1) * GAP;
  out.height = top + rowH.reduce((a, b) => a + b, 0) + (rows.length - 1) * GAP + PAD;
  const context = out.getContext("2d");
  context.fillStyle = cssColor("--bg");
  context.fillRect(0, 0, out.width, out.height);
  context.font = `${text}px ${FONT}`;
  context.textBaseline = "top";
  context.fillStyle = cssColor("--fg");
  titleLines.forEach((t, k) => context.fillText(t, PAD, PAD + k * line));
  let y = top;
  const placed = [];
  rows.forEach((row, r) => {
    row.forEach((cell, k) => {
      const x = PAD + k * (cellW + GAP);
      const { card, pictureH, legend } = cell;
      const { width, height } = card.canvas;
      const [sx, sy, sw, sh] = lens ? lens.region(width, height) : [0, 0, width, height];
      context.imageSmoothingEnabled = false; // the stored pixels, enlarged, not blurred
      context.drawImage(card.canvas, sx, sy, sw, sh, x, y, cellW, pictureH);
      let at = y + pictureH + 6;
      placed.push({ x, y, width: cellW, height: pictureH, bar: legend.bar ? at : null });
      context.fillStyle = cssColor("--muted");
      if (legend.bar) {
        const barH = Math.round(10 * scale);
        context.imageSmoothingEnabled = true;
        context.drawImage(legend.bar, x, at, cellW, barH);
        at += barH + 2;
        context.textAlign = "left";
        context.fillText(legend.lo, x, at);
        context.textAlign = "right";
        context.fillText(legend.hi, x + cellW, at);
        context.textAlign = "left";
        at += line;
      }
      cell.noteLines.forEach((t) => {
        context.fillText(t, x, at);
        at += line;
      });
      context.fillStyle = cssColor("--fg");
      cell.captionLines.forEach((t) => {
        context.fillText(t, x, at);
        at += line;
      });
    });
    y += rowH[r] + GAP;
  });
  const layout = { title, width: out.width, height: out.height, cells: placed };
  return new Promise((resolve) => out.toBlob((blob) => resolve({ blob, layout }), "image/png"));
}
