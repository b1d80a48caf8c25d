/**
 * Cards: a picture with a map over it. They are painted only when they come
 * into view (so a long series fetches only what is looked at), zoomed and
 * panned together through one `Lens` (so compared maps stay aligned), and tell
 * what lies under the mouse (export.js puts the shown cards into one picture).
 */

import { el } from "./dom.js";

const clamp = (value, lo, hi) => Math.min(Math.max(value, lo), hi);

/** One zoom and pan shared by a set of cards; the pan is the fraction of the picture left of and above view. */
export class Lens {
  constructor() {
    this.zoom = 1;
    this.x = 0;
    this.y = 0;
    this.cards = new Set();
  }

  setZoom(zoom) {
    this.zoom = Math.max(1, zoom);
    this.pan(0, 0);
  }

  /** Moves the view by a fraction of the picture, kept inside it. */
  pan(dx, dy) {
    const limit = 1 - 1 / this.zoom;
    this.x = clamp(this.x + dx, 0, limit);
    this.y = clamp(this.y + dy, 0, limit);
    for (const card of this.cards) this.apply(card);
  }

  apply(card) {
    card.canvas.style.transform =
      this.zoom === 1 ? "" : `scale(${this.zoom}) translate(${-100 * this.x}%, ${-100 * this.y}%)`;
  }

  /** The part of a w x h picture in view: [sx, sy, sw, sh]. */
  region(w, h) {
    return [this.x * w, this.y * h, w / this.zoom, h / this.zoom];
  }

  /** Lets the cards' viewports pan the view by dragging. */
  attach(card) {
    this.cards.add(card);
    let last = null;
    card.viewport.addEventListener("pointerdown", (event) => {
      if (this.zoom === 1) return;
      last = [event.clientX, event.clientY];
      card.viewport.setPointerCapture(event.pointerId);
    });
    card.viewport.addEventListener("pointermove", (event) => {
      if (!last) return;
      const size = card.viewport.getBoundingClientRect();
      this.pan((last[0] - event.clientX) / (size.width * this.zoom), (last[1] - event.clientY) / (size.height * this.zoom));
      last = [event.clientX, event.clientY];
    });
    const stop = () => (last = null);
    card.viewport.addEventListener("pointerup", stop);
    card.viewport.addEventListener("pointercancel", stop);
  }
}

export class Card {
  /** `onHover(text)` receives what lies under the mouse ("" when it leaves). */
  constructor({ lens = null, onHover = () => {}, className = "card" } = {}) {
    this.canvas = el("canvas", { className: "overlay", width: 0, height: 0 });
    this.viewport = el("div", { className: "viewport" }, [this.canvas]);
    this.caption = el("figcaption", { className: "caption" });
    this.legend = el("div", { className: "legend-slot" });
    this.node = el("figure", { className, dataset: { state: "empty" } }, [this.viewport, this.legend, this.caption]);
    this.lens = lens;
    this.probe = null; // (x, y) in canvas pixels -> text
    this.job = null;
    this.visible = false;
    if (lens) lens.attach(this);
    this.viewport.addEventListener("mousemove", (event) => {
      if (!this.probe || !this.canvas.width) return;
      const box = this.canvas.getBoundingClientRect(); // after the lens' transform
      const x = Math.floor(((event.clientX - box.left) / box.width) * this.canvas.width);
      const y = Math.floor(((event.clientY - box.top) / box.height) * this.canvas.height);
      if (x >= 0 && y >= 0 && x < this.canvas.width && y < this.canvas.height) onHover(this.probe(x, y));
    });
    this.viewport.addEventListener("mouseleave", () => onHover(""));
  }

  /** Shows a colour-scale legend element under the picture (none: null). */
  setLegend(node) {
    this.legend.replaceChildren(...(node ? [node] : []));
  }

  /** The caption, whole on hover, with `help` (what its terms mean) below it in the tooltip. */
  setCaption(text, help = "") {
    this.caption.textContent = text;
    this.caption.title = help ? `${text}\n${help}` : text;
  }
}

/**
 * Paints cards as they come into view. A job is `async () => draw`, where
 * `draw(canvas)` paints synchronously and returns {probe, legend}: the card's probe and its
 * colour-scale legend element (or null); a job
 * replaced while it loads is dropped, so a late answer never overwrites a newer one.
 */
export class Painter {
  constructor(root, margin = "200px") {
    this.cards = new Map(); // figure -> Card
    this.observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const card = this.cards.get(entry.target);
          if (!card) continue;
          card.visible = entry.isIntersecting;
          if (card.visible && card.node.dataset.state === "queued") this.run(card);
        }
      },
      { root, rootMargin: margin },
    );
  }

  /** Gives a card a new job; resolves once it is painted, or at once when it is out of view (painted later). */
  show(card, job) {
    card.job = job;
    card.node.dataset.state = "queued";
    if (!this.cards.has(card.node)) {
      this.cards.set(card.node, card);
      this.observer.observe(card.node);
    }
    return card.visible ? this.run(card) : Promise.resolve();
  }

  forget(card) {
    this.cards.delete(card.node);
    this.observer.unobserve(card.node);
    card.lens?.cards.delete(card);
  }

  async run(card) {
    const job = card.job;
    card.node.dataset.state = "loading";
    try {
      const draw = await job();
      if (card.job !== job) return;
      const { probe, legend } = draw(card.canvas);
      card.probe = probe;
      card.setLegend(legend);
      card.lens?.apply(card);
      card.node.dataset.state = "painted";
    } catch (error) {
      if (card.job !== job) return;
      card.probe = null;
      card.setLegend(null);
      card.setCaption(`Could not draw: ${error.message}`);
      card.node.dataset.state = "failed";
    }
  }
}
