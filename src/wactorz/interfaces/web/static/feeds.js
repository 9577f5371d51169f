// The events and alerts feeds (newest first, bounded) and the metrics summary.

import { bytes, clock, count, el, setText, short } from "./dom.js";

const FEED_LIMIT = 100;
const SPARK_POINTS = 120; // two minutes of one sample a second

/** A list that takes items at the top and forgets the oldest past `limit`. */
export class Feed {
  constructor(list, { limit = FEED_LIMIT } = {}) {
    this.list = list;
    this.limit = limit;
    this.empty = document.querySelector(`[data-empty-for="${list.id}"]`);
  }

  add(item) {
    this.list.prepend(item);
    while (this.list.children.length > this.limit) this.list.lastElementChild.remove();
    if (this.empty) this.empty.hidden = true;
  }

  /** A frame came with `missed`: say how many of its kind the server dropped. */
  missed(n, what) {
    this.add(el("li", { class: "missed", text: `${n} ${what} missed while this page was behind` }));
  }
}

/** An `event` frame's event as a feed item: time, kind, name, and what went wrong. */
export function eventItem(event) {
  const kind = String(event.kind);
  const detail = event.error || event.reason;
  return el(
    "li",
    { class: `event event-${kind}` },
    el("time", { text: clock(event.time) }),
    el("span", { class: `tag kind-${kind}`, text: kind }),
    el("span", { class: "who", text: event.name }),
    event.supervisor ? el("span", { class: "muted", text: `in ${event.supervisor}` }) : null,
    detail ? el("span", { class: "detail", text: detail }) : null,
  );
}

/** An `alert` frame's alert as a feed item: severity (or resolved), name, message. */
export function alertItem(alert) {
  const severity = alert.resolved ? "resolved" : String(alert.severity);
  return el(
    "li",
    { class: `alert severity-${severity}` },
    el("time", { text: clock(alert.time) }),
    el("span", { class: "tag", text: severity }),
    el("span", { class: "who", text: alert.name || alert.subject || alert.kind }),
    el("span", { class: "detail", text: alert.message }),
    alert.suppressed ? el("span", { class: "muted", text: `(+${alert.suppressed} held back)` }) : null,
  );
}

/** A bounded ring of numbers: the newest `capacity` pushed, oldest first. */
export class Ring {
  constructor(capacity) {
    this.slots = new Array(capacity);
    this.next = 0;
    this.size = 0;
  }

  push(value) {
    this.slots[this.next] = value;
    this.next = (this.next + 1) % this.slots.length;
    this.size = Math.min(this.size + 1, this.slots.length);
  }

  values() {
    const capacity = this.slots.length;
    const first = (this.next - this.size + capacity) % capacity;
    return Array.from({ length: this.size }, (_, i) => this.slots[(first + i) % capacity]);
  }
}

/**
 * One sparkline: an SVG polyline over a `Ring` of samples, right-aligned (the newest at
 * the right edge). `zero` scales from 0 to the highest sample (rates, percentages);
 * otherwise from the lowest to the highest (memory, running totals), so that a small
 * change of a large number shows.
 */
class Sparkline {
  constructor(svg, { zero, format }) {
    this.line = svg.querySelector("polyline");
    this.title = svg.querySelector("title");
    this.zero = zero;
    this.format = format;
    this.ring = new Ring(SPARK_POINTS);
    svg.setAttribute("viewBox", `0 0 ${SPARK_POINTS - 1} 16`);
  }

  add(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    this.ring.push(value);
    const values = this.ring.values();
    const high = Math.max(...values);
    const low = this.zero ? 0 : Math.min(...values);
    const span = high - low;
    const points = values.map((v, i) => {
      const x = SPARK_POINTS - values.length + i;
      const y = span > 0 ? 15 - ((v - low) / span) * 14 : this.zero && high === 0 ? 15 : 8;
      return `${x},${y.toFixed(1)}`;
    });
    this.line.setAttribute("points", points.join(" "));
    this.title.textContent = `last ${values.length} s: ${this.format(Math.min(...values))} to ${this.format(high)}`;
  }
}

function tokenTotal(llm) {
  const tokens = llm && llm.tokens && typeof llm.tokens === "object" ? llm.tokens : {};
  const kinds = Object.entries(tokens).filter(([, n]) => typeof n === "number");
  return { kinds, total: kinds.reduce((sum, [, n]) => sum + n, 0) };
}

/**
 * The metrics panel: one `metrics` frame a second. Sparklines of messages/s, CPU, memory,
 * LLM tokens and cost keep the last `SPARK_POINTS` samples each (tokens and cost are
 * running totals: their lines climb when the language model is used).
 */
export class MetricsView {
  constructor(panel, health) {
    this.cells = Object.fromEntries(
      [...panel.querySelectorAll("[data-metric]")].map((node) => [node.dataset.metric, node]),
    );
    this.health = health;
    const dollars = (v) => `$${v.toFixed(4)}`;
    const options = {
      rate: { zero: true, format: short },
      cpu: { zero: true, format: (v) => `${short(v)} %` },
      memory: { zero: false, format: bytes },
      tokens: { zero: false, format: count },
      cost: { zero: false, format: dollars },
    };
    this.sparks = Object.fromEntries(
      [...panel.querySelectorAll("svg[data-spark]")].map((svg) => [
        svg.dataset.spark,
        new Sparkline(svg, options[svg.dataset.spark]),
      ]),
    );
  }

  /** Take one `metrics` frame; returns the health status it carried ("" without one). */
  update(frame) {
    const cells = this.cells;
    setText(cells.rate, short(frame.messages_per_s));
    setText(cells.actors, count(frame.actors));
    setText(cells.connections, count(frame.connections));
    const health = frame.health && typeof frame.health === "object" ? frame.health : null;
    const process = health && health.process ? health.process : null;
    setText(cells.cpu, process ? `${short(process.cpu_percent)} %` : "–");
    setText(cells.memory, process ? bytes(process.rss_bytes) : "–");
    const status = health ? String(health.status) : "";
    setText(this.health, status);
    this.health.dataset.status = status;
    const llm = frame.llm || {};
    const { kinds, total } = tokenTotal(llm);
    setText(cells.tokens, kinds.length ? count(total) : "–");
    cells.tokens.title = kinds.map(([kind, n]) => `${kind}: ${count(n)}`).join(", ");
    const cost = typeof llm.cost_usd === "number" ? llm.cost_usd : null;
    setText(cells.cost, cost !== null && (kinds.length || cost > 0) ? `$${cost.toFixed(4)}` : "–");
    this.sparks.rate.add(frame.messages_per_s);
    if (process) {
      this.sparks.cpu.add(process.cpu_percent);
      this.sparks.memory.add(process.rss_bytes);
    }
    this.sparks.tokens.add(total);
    this.sparks.cost.add(cost ?? 0);
    return status;
  }
}
