// The details panel of the selected actor: what it is, how it is doing, and its controls.
//
// Live numbers come from the tree (every delta); what an actor is (class, capabilities,
// tools with their descriptions, supervisor) comes once from a `describe` request, again
// after each control. Stop, Restart and Delete send the MainActor `/stop NAME`,
// `/restart NAME` and `/delete NAME` as `command` frames, each after a confirmation in the
// page's <dialog>; the router's answer, or its refusal, is shown under the buttons.
// Actors the page must not stop (the router, the front door, the monitor, supervisors:
// `describe` says why) have their controls disabled, the reason in their tooltip and in a
// line of text.

import { clock, count, el, setText, short } from "./dom.js";

const LIVE_STATES = new Set(["running", "starting", "restarting", "crashed", "created"]);

const QUESTIONS = {
  stop: (name) => ({
    title: `Stop ${name}?`,
    body: `${name} stops, and its supervisor does not restart it: Restart brings it back. Messages waiting in its mailbox are lost.`,
    action: "Stop",
    danger: true,
  }),
  restart: (name) => ({
    title: `Restart ${name}?`,
    body: `${name} stops and starts again as a new incarnation. What it held in memory is lost; messages waiting in its mailbox are lost.`,
    action: "Restart",
    danger: false,
  }),
  delete: (name) => ({
    title: `Delete ${name} for good?`,
    body: `${name} stops and will not come back, not even when the service restarts. Only actors a user spawned (with /spawn) can be deleted: the router refuses the others.`,
    action: "Delete",
    danger: true,
  }),
};

const DOING = { stop: "Stopping", restart: "Restarting", delete: "Deleting" };

/** What a command's answer says, as text. */
function answerText(answer) {
  if (answer && typeof answer === "object" && typeof answer.text === "string") return answer.text;
  if (typeof answer === "string") return answer;
  return answer === null || answer === undefined ? "done" : JSON.stringify(answer);
}

export class ActorDetails {
  /**
   * `panel` is the details <section>; `confirm` a `Confirmation`; `request(frame)` sends a
   * request and resolves with its final frame; `tree` is the `ActorTree` (for live numbers).
   */
  constructor({ panel, confirm, request, tree }) {
    this.confirm = confirm;
    this.request = request;
    this.tree = tree;
    this.title = panel.querySelector("#details-name");
    this.empty = panel.querySelector("#details-empty");
    this.body = panel.querySelector("#details-body");
    this.fields = Object.fromEntries(
      [...panel.querySelectorAll("[data-field]")].map((node) => [node.dataset.field, node]),
    );
    this.buttons = Object.fromEntries(
      [...panel.querySelectorAll("button[data-action]")].map((node) => [node.dataset.action, node]),
    );
    this.name = null;
    this.described = null; // the `describe` answer for `name`, once it came
    this.missing = null;
    this.busy = null; // the action running, if any
    this.online = false;
    for (const [action, button] of Object.entries(this.buttons)) {
      button.addEventListener("click", () => this.act(action));
    }
  }

  /** Show the actor or supervisor called `name` (null: nothing selected). */
  select(name) {
    if (name === this.name) return;
    this.name = name;
    this.described = null;
    this.missing = null; // why `describe` found nothing by that name (it was deleted...)
    this.showOutcome("", "");
    this.empty.hidden = name !== null;
    this.body.hidden = name === null;
    setText(this.title, name ?? "");
    if (name !== null) {
      this.fill();
      this.describe();
    }
  }

  /** The socket said hello (again): controls work, and what is shown is looked up anew. */
  connected() {
    this.online = true;
    if (this.name !== null) this.describe();
    this.fill();
  }

  offline() {
    this.online = false;
    this.fill();
  }

  /** The tree changed: refresh the live numbers. */
  treeChanged() {
    if (this.name !== null) this.fill();
  }

  async describe() {
    const name = this.name;
    let frame;
    try {
      frame = await this.request({ type: "describe", actor: name });
    } catch {
      return; // offline: done again on the next hello
    }
    if (name !== this.name) return;
    if (frame.type === "error") {
      this.described = null;
      this.missing = frame.error;
      // What a control just answered ("deleted ...") says more than "not found".
      if (this.fields.outcome.hidden) this.showOutcome(frame.error, "error");
    } else {
      this.described = frame.reply.actor;
      this.missing = null;
    }
    this.fill();
  }

  fill() {
    const node = this.name === null ? null : this.tree.byName(this.name);
    const about = this.described;
    const f = this.fields;
    const supervisor = (node && node.kind === "supervisor") || (about && about.kind === "supervisor");
    const state = node ? String(node.state) : about ? String(about.state) : "gone";
    setText(f.state, state);
    f.state.className = `state state-${state}`;
    setText(f.class, supervisor ? `supervisor · ${(node || about).strategy}` : (node && node.class) || (about && about.class) || "");
    this.fillFacts(node, about, supervisor);
    const lastError = (node && node.last_error) || (about && about.last_error);
    setText(f.last_error, lastError ? `Last error: ${lastError}` : "");
    f.last_error.hidden = !lastError;
    this.fillKind(about, supervisor);
    this.fillControls(node, about, supervisor, state);
  }

  fillFacts(node, about, supervisor) {
    const facts = [];
    if (supervisor) {
      const children = (about && about.children) || [];
      facts.push(["Children", children.length ? children.join(", ") : "none"]);
    } else {
      facts.push(["Supervisor", about ? about.supervisor || "none (unsupervised)" : "…"]);
      facts.push(["Restart", (node && node.restart) || (about && about.restart) || "–"]);
      if (node && LIVE_STATES.has(String(node.state))) {
        facts.push(["Mailbox", `${count(node.queued)} of ${count(node.capacity)}`]);
        facts.push(["Processed", count(node.processed)]);
        facts.push(["Msg/s", node.rate === null || node.rate === undefined ? "–" : short(node.rate)]);
        const beat = node.heartbeat;
        if (beat && typeof beat.time === "number") {
          facts.push(["Heartbeat", `${clock(beat.time)}, idle ${short(beat.since_activity_s)} s`]);
        }
      }
      if (node) {
        facts.push(["Restarts", count(node.restarts)]);
        facts.push(["Crashes", count(node.crashes)]);
      }
    }
    const list = this.fields.facts;
    list.replaceChildren(
      ...facts.map(([term, value]) => el("div", {}, el("dt", { text: term }), el("dd", { text: value }))),
    );
  }

  fillKind(about, supervisor) {
    const f = this.fields;
    f.about.hidden = supervisor;
    if (supervisor) return;
    if (about === null) {
      f.capabilities.replaceChildren(el("li", { class: "muted", text: "…" }));
      f.tools.replaceChildren();
      return;
    }
    const capabilities = about.capabilities || [];
    f.capabilities.replaceChildren(
      ...(capabilities.length
        ? capabilities.map((word) => el("li", { class: "chip", text: word }))
        : [el("li", { class: "muted", text: about.capabilities ? "none declared" : "unknown" })]),
    );
    const tools = about.tools || [];
    f.tools.replaceChildren(
      ...(tools.length
        ? tools.map((tool) => {
            const inputs = Object.keys((tool.input_schema && tool.input_schema.properties) || {});
            return el(
              "li",
              { class: "tool" },
              el("code", { class: "tool-name", text: `${tool.name}(${inputs.join(", ")})` }),
              el("span", { class: "tool-about", text: tool.description }),
            );
          })
        : [el("li", { class: "muted", text: about.tools ? "no tools" : "unknown" })]),
    );
  }

  /** Why each control is not available now (null: it is). */
  reasons(node, about, supervisor, state) {
    const protectedBy = supervisor
      ? (about && about.protected) || "a supervisor: stop or restart its children instead"
      : about && about.protected;
    let common = null;
    if (!this.online) common = "Not connected to the service";
    else if (this.busy) common = `${DOING[this.busy]} ${this.name}…`;
    else if (protectedBy) common = `Protected: ${protectedBy}`;
    else if (this.missing !== null && node === null) common = `${this.name} is gone`;
    else if (about === null) common = this.missing ?? "Looking it up…";
    return {
      stop: common || (LIVE_STATES.has(state) ? null : `${this.name} is ${state} already`),
      restart: common || (about.supervisor ? null : "Not supervised: nothing can restart it"),
      delete: common,
      protectedBy,
    };
  }

  fillControls(node, about, supervisor, state) {
    const why = this.reasons(node, about, supervisor, state);
    const titles = {
      stop: "Stop it; its supervisor keeps it stopped",
      restart: "Stop it and start it again",
      delete: "Remove an actor a user spawned, for good",
    };
    for (const [action, button] of Object.entries(this.buttons)) {
      const reason = why[action];
      button.disabled = reason !== null;
      const title = reason ?? titles[action];
      button.title = title;
      button.parentElement.title = title; // a disabled button shows no tooltip of its own
    }
    const note = this.fields.protected;
    setText(note, why.protectedBy ? `Protected: ${why.protectedBy}.` : "");
    note.hidden = !why.protectedBy;
  }

  async act(action) {
    const name = this.name;
    if (name === null || this.busy) return;
    if (!(await this.confirm.ask(QUESTIONS[action](name)))) return;
    if (name !== this.name) return;
    this.busy = action;
    this.showOutcome(`${DOING[action]} ${name}…`, "");
    this.fill();
    let frame = null;
    try {
      frame = await this.request({ type: "command", text: `/${action} ${name}` });
    } catch (error) {
      this.showOutcome(`${DOING[action]} ${name}: ${error.message}; look at the tree for its state.`, "error");
    }
    this.busy = null;
    if (frame !== null && name === this.name) {
      if (frame.type === "error") this.showOutcome(frame.error, "error");
      else this.showOutcome(answerText(frame.reply), "ok");
    }
    if (name === this.name) {
      this.fill();
      this.describe();
    }
  }

  showOutcome(text, tone) {
    const outcome = this.fields.outcome;
    setText(outcome, text);
    outcome.className = `outcome ${tone}`;
    outcome.hidden = !text;
  }
}
