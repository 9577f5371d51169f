// The live actor tree: a `snapshot`, then numbered `delta`s, drawn as an indented table,
// one group of rows per node under a header row naming the node.
//
// Deltas apply in `seq` order. One that does not follow the last seen `seq` means some
// were missed: the tree asks for a snapshot (through `onGap`) and ignores deltas until
// it comes, as docs/websocket.md says. Rows are kept per node id and updated in place,
// so that a tick changes only the cells whose text changed.
//
// Nodes: a snapshot names its node; a delta without a `node` belongs to the node of this
// connection (the one `hello` named). One node today; each further node the service
// reports gets a <tbody> of its own, with its own header and sequence numbers.
//
// Selecting a row (a click, or Enter on a focused row) tells `onSelect` the node's name.

import { count, el, setText, short } from "./dom.js";

const STATE_CLASSES = new Set([
  "created", "starting", "running", "stopping", "stopped", "crashed", "restarting",
  "up", "down", "unreachable",
]);
const COLUMNS = 6;

/** One node's part of the tree: its rows, its sequence number, its header. */
class NodeGroup {
  constructor(name, table) {
    this.name = name;
    this.nodes = new Map();
    this.rows = new Map();
    this.seq = null;
    this.resyncing = false;
    this.title = el("span", { class: "node-name", text: name });
    this.summary = el("span", { class: "node-summary" });
    this.health = el("span", { class: "health", "data-status": "" });
    this.head = el(
      "tr",
      { class: "node-head" },
      el("th", { scope: "rowgroup", colspan: COLUMNS }, el("span", { class: "node-label", text: "node" }), this.title, this.summary, this.health),
    );
    this.body = el("tbody", { class: "node-group", "data-node": name }, this.head);
    table.append(this.body);
  }

  /** Nodes in display order, each with its depth: supervisors' children in start order. */
  ordered() {
    const result = [];
    const placed = new Set();
    const byId = [...this.nodes.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    const adopted = new Map(); // parent id -> children its `children` list does not name
    for (const node of byId) {
      const parent = this.nodes.get(node.parent);
      if (parent && !(parent.children || []).includes(node.id)) {
        if (!adopted.has(parent.id)) adopted.set(parent.id, []);
        adopted.get(parent.id).push(node);
      }
    }
    const visit = (node, depth) => {
      if (placed.has(node.id)) return;
      placed.add(node.id);
      result.push([node, depth]);
      const named = (node.children || []).map((id) => this.nodes.get(id)).filter(Boolean);
      for (const child of [...named, ...(adopted.get(node.id) || [])]) visit(child, depth + 1);
    };
    for (const node of byId) {
      if (node.parent === null || !this.nodes.has(node.parent)) visit(node, 0);
    }
    for (const node of byId) visit(node, 0); // a cycle's survivors, if the data is odd
    return result;
  }

  render(selected, onSelect) {
    const ordered = this.ordered();
    for (const [id, row] of this.rows) {
      if (!this.nodes.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    for (const [node, depth] of ordered) {
      let row = this.rows.get(node.id);
      if (row === undefined) {
        row = makeRow(onSelect);
        this.rows.set(node.id, row);
      }
      fillRow(row, node, depth);
      const current = node.name === selected;
      if (current) row.tr.setAttribute("aria-current", "true");
      else row.tr.removeAttribute("aria-current");
      this.body.append(row.tr); // in order: appending an existing row moves it
    }
    const actors = ordered.filter(([node]) => node.kind === "actor");
    const running = actors.filter(([node]) => node.state === "running").length;
    setText(this.summary, `${actors.length} actor${actors.length === 1 ? "" : "s"}, ${running} running`);
    return actors.length;
  }

  byName(name) {
    for (const node of this.nodes.values()) if (node.name === name) return node;
    return null;
  }
}

export class ActorTree {
  /** `table` is the tree's <table>; `empty` the placeholder shown before the first snapshot. */
  constructor({ table, empty, counter, onGap, onSelect }) {
    this.table = table;
    this.empty = empty;
    this.counter = counter;
    this.onGap = onGap;
    this.onSelect = onSelect;
    this.groups = new Map(); // node name -> NodeGroup
    this.local = null; // this connection's node, from hello
    this.selected = null; // the selected actor's name (on the local node)
    this.pick = (name) => this.onSelect(name);
  }

  /** The node this connection's service runs on: deltas without a `node` are its. */
  hello(node) {
    this.local = node;
  }

  /** The connection is gone: keep the last tree, greyed, until the next snapshot. */
  stale() {
    for (const group of this.groups.values()) group.seq = null;
    this.table.classList.add("stale");
  }

  group(name) {
    const key = name ?? this.local ?? "";
    let group = this.groups.get(key);
    if (group === undefined) {
      group = new NodeGroup(key, this.table);
      this.groups.set(key, group);
    }
    return group;
  }

  snapshot(frame) {
    const group = this.group(frame.node);
    group.nodes = new Map(frame.actors.map((node) => [node.id, node]));
    group.seq = frame.seq;
    group.resyncing = false;
    this.table.classList.remove("stale");
    this.render();
  }

  delta(frame) {
    const group = this.group(frame.node);
    if (group.seq === null || group.resyncing || frame.seq <= group.seq) return;
    if (frame.seq !== group.seq + 1) {
      group.resyncing = true;
      this.onGap(group.name);
      return;
    }
    for (const node of frame.upsert) group.nodes.set(node.id, node);
    for (const id of frame.remove) group.nodes.delete(id);
    group.seq = frame.seq;
    this.render();
  }

  /** Show a node's health (a `metrics` frame's) in its header. */
  health(node, status) {
    const group = this.groups.get(node ?? this.local);
    if (group === undefined) return;
    setText(group.health, status || "");
    group.health.dataset.status = status || "";
  }

  /** Mark the actor called `name` as the selected one (null: none). */
  select(name) {
    this.selected = name;
    this.render();
  }

  /** The latest tree node of the actor or supervisor called `name` on this node, or null. */
  byName(name) {
    const group = this.groups.get(this.local);
    return group ? group.byName(name) : null;
  }

  render() {
    let actors = 0;
    let shown = 0;
    for (const group of this.groups.values()) {
      const selected = group.name === this.local ? this.selected : null;
      actors += group.render(selected, this.pick);
      shown += group.nodes.size;
      group.head.hidden = group.nodes.size === 0;
    }
    setText(this.counter, `(${actors})`);
    this.empty.hidden = shown > 0;
  }
}

function makeRow(onSelect) {
  const row = {
    name: el("span", { class: "name" }),
    about: el("span", { class: "about" }),
    error: el("span", { class: "last-error" }),
    state: el("span", { class: "state" }),
    stalled: el("span", { class: "stalled" }),
    meter: el("meter", { min: 0, max: 1, value: 0 }),
    depth: el("span", { class: "depth" }),
    processed: el("td", { class: "num optional" }),
    rate: el("td", { class: "num optional" }),
    restarts: el("td", { class: "num" }),
  };
  row.head = el("th", { scope: "row" }, row.name, row.about, row.error);
  row.mailbox = el("div", { class: "mailbox" }, row.meter, row.depth);
  row.tr = el(
    "tr",
    { tabindex: 0 },
    row.head,
    el("td", {}, row.state, row.stalled),
    el("td", {}, row.mailbox),
    row.processed,
    row.rate,
    row.restarts,
  );
  row.tr.addEventListener("click", () => onSelect(row.tr.dataset.name));
  row.tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      onSelect(row.tr.dataset.name);
    }
  });
  return row;
}

function shortClass(name) {
  return typeof name === "string" ? name.split(".").pop() : "";
}

function describe(node) {
  if (node.kind === "supervisor") return `supervisor · ${node.strategy}`;
  if (node.kind === "node") {
    const actors = (node.children || []).length;
    return `node · ${actors} actor${actors === 1 ? "" : "s"}`;
  }
  const where = node.remote ? `on ${node.node}` : node.restart;
  return [shortClass(node.class), where].filter(Boolean).join(" · ");
}

function fillRow(row, node, depth) {
  // Supervisors and other nodes have no mailbox; neither have actors seen from afar.
  const supervisor = node.kind === "supervisor" || node.kind === "node";
  const remote = Boolean(node.remote);
  row.tr.dataset.id = node.id;
  row.tr.dataset.name = node.name;
  row.tr.className = node.kind === "node" ? "node" : supervisor ? "supervisor" : "actor";
  row.tr.classList.toggle("remote", remote);
  row.tr.setAttribute("aria-label", `${node.name}: details and controls`);
  row.head.style.paddingLeft = `${0.6 + depth * 1.2}em`;
  setText(row.name, node.name);
  setText(row.about, describe(node));
  row.about.title = node.kind === "actor" ? node.class || "" : "";
  const error = node.kind === "node" ? node.reason : node.last_error;
  setText(row.error, error || "");
  row.error.hidden = !error;

  const state = String(node.state);
  setText(row.state, state);
  row.state.className = `state state-${STATE_CLASSES.has(state) ? state : "other"}`;
  const stalled = node.heartbeat && node.heartbeat.stalled_s > 0 ? node.heartbeat.stalled_s : 0;
  setText(row.stalled, stalled ? `stalled ${short(stalled)} s` : "");
  row.stalled.hidden = !stalled;

  if (supervisor || remote) {
    row.mailbox.hidden = true;
    setText(row.depth, "");
    setText(row.processed, "");
    setText(row.rate, "");
    setText(row.restarts, "");
    return;
  }
  const capacity = Math.max(node.capacity || 0, 1);
  row.mailbox.hidden = false;
  row.meter.max = capacity;
  row.meter.value = node.queued || 0;
  row.meter.low = capacity * 0.5;
  row.meter.high = capacity * 0.8;
  row.meter.optimum = 0;
  row.meter.setAttribute("aria-label", `mailbox of ${node.name}`);
  setText(row.depth, `${count(node.queued)}/${count(node.capacity)}`);
  setText(row.processed, count(node.processed));
  setText(row.rate, node.rate === null || node.rate === undefined ? "–" : short(node.rate));
  setText(row.restarts, count(node.restarts));
  row.restarts.title = `incarnation ${node.restarts}; ${node.crashes} crash${node.crashes === 1 ? "" : "es"}`;
  row.restarts.classList.toggle("crashed", node.crashes > 0);
}
