// The events and alerts feeds (newest first, bounded) and the metrics summary.

import { bytes, clock, count, el, setText, short } from "./dom.js";

const FEED_LIMIT = 100;
const SPARK_POINTS = 60;

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

/** The metrics panel: one `metrics` frame a second, and a sparkline of messages/s. */
export class MetricsView {
  constructor(panel, health) {
    this.cells = Object.fromEntries(
      [...panel.querySelectorAll("[data-metric]")].map((node) => [node.dataset.metric, node]),
    );
    this.health = health;
    this.line = panel.querySelector("#sparkline polyline");
    this.rates = [];
  }

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
    const tokens = llm.tokens && typeof llm.tokens === "object" ? llm.tokens : {};
    const kinds = Object.entries(tokens).filter(([, n]) => typeof n === "number");
    const total = kinds.reduce((sum, [, n]) => sum + n, 0);
    setText(cells.tokens, kinds.length ? count(total) : "–");
    cells.tokens.title = kinds.map(([kind, n]) => `${kind}: ${count(n)}`).join(", ");
    setText(cells.cost, typeof llm.cost_usd === "number" && (kinds.length || llm.cost_usd > 0) ? `$${llm.cost_usd.toFixed(4)}` : "–");
    if (typeof frame.messages_per_s === "number") this.plot(frame.messages_per_s);
  }

  plot(rate) {
    this.rates.push(rate);
    if (this.rates.length > SPARK_POINTS) this.rates.shift();
    const top = Math.max(...this.rates, 1);
    const points = this.rates.map((value, i) => {
      const x = SPARK_POINTS - this.rates.length + i;
      return `${x},${(15 - (value / top) * 14).toFixed(1)}`;
    });
    this.line.setAttribute("points", points.join(" "));
  }
}
