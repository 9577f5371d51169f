// The chat panel: the session, what the user sends, and replies drawn as they stream in.
//
// Text starting with "/" goes as a `command` frame, anything else as `chat` (the
// MainActor routes "@name ..." itself). Each request gets a bubble that `stream` parts
// fill as they arrive: text appended as text, stdout and stderr in a monospace block,
// tool_start and tool_end as small badges. Its final frame (`stream_end`, `reply` or
// `error`) closes the bubble. The session id lives in localStorage, so a reload keeps
// the conversation's id; "New session" makes another.
//
// After a reload (or on switching sessions) the conversation so far is asked of the LLM
// agent (`{"history": S}`, an `ask` frame to the actor `llm`) and drawn the same way: the
// user's text, the assistant's text, tool calls as badges (✓ or ✗ from their results).
// The sessions list comes from `/sessions` (the LLM agent's conversations); picking one
// switches to it.

import { clock, el, nearBottom } from "./dom.js";

const LLM_AGENT = "llm";
const HISTORY_TIMEOUT_S = 10;

const SESSION_KEY = "wactorz.session";
const TEXT_KINDS = new Set(["text", "stdout", "stderr"]);

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "s" + btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

/** What a final frame's answer says, as text: its `text`, a string, or its JSON. */
function answerText(answer) {
  if (answer === null || answer === undefined) return "";
  if (typeof answer === "string") return answer;
  if (typeof answer === "object" && typeof answer.text === "string") return answer.text;
  return JSON.stringify(answer, null, 2);
}

/** One reply bubble, filled part by part. */
class Bubble {
  constructor(label) {
    this.body = el("div", { class: "body" });
    this.note = el("p", { class: "note", hidden: true });
    this.item = el(
      "li",
      { class: "msg reply", "aria-busy": "true" },
      el("p", { class: "who", text: label }),
      this.body,
      this.note,
    );
    this.kind = null; // the kind of the text node last written to
    this.text = null;
    this.hasText = false;
    this.tools = new Map();
    this.toolNames = new Map();
    this.cancelling = false;
  }

  /** The name of the tool call `id` this bubble shows ("tool" if it shows none). */
  toolName(id) {
    return this.toolNames.get(String(id)) ?? "tool";
  }

  part(part) {
    if (!part || typeof part !== "object") return;
    const kind = String(part.kind);
    if (TEXT_KINDS.has(kind) && typeof part.text === "string") {
      this.write(kind, part.text);
    } else if (kind === "tool_start" || kind === "tool_end") {
      this.tool(kind, part);
    }
  }

  write(kind, text) {
    if (this.kind !== kind) {
      this.text = document.createTextNode("");
      this.body.append(kind === "text" ? this.text : el("pre", { class: `out ${kind}` }, this.text));
      this.kind = kind;
    }
    this.text.appendData(text);
    this.hasText = true;
  }

  tool(kind, part) {
    const name = String(part.name ?? part.tool ?? "tool");
    const key = String(part.id ?? part.tool_use_id ?? name);
    const failed = kind === "tool_end" && (part.error || part.ok === false || part.is_error);
    const label = kind === "tool_start" ? `⚙ ${name}…` : `${failed ? "✗" : "✓"} ${name}`;
    this.toolNames.set(key, name);
    let badge = this.tools.get(key);
    if (badge === undefined || kind === "tool_start") {
      badge = el("span", { class: "badge" });
      this.body.append(badge);
      this.tools.set(key, badge);
      this.kind = null;
    }
    badge.textContent = label;
    badge.className = `badge ${kind === "tool_start" ? "running" : failed ? "failed" : "done"}`;
    badge.title = typeof part.error === "string" ? part.error : name;
  }

  /** The final frame came: show the answer if nothing streamed, and a closing note. */
  finish(frame) {
    if (frame.type === "error") {
      this.close(frame.code === "cancelled" ? "Cancelled." : frame.error, "error");
      return;
    }
    const result = frame.result && typeof frame.result === "object" ? frame.result : {};
    if (!this.hasText) {
      const text = answerText(frame.reply);
      if (text) this.write("text", text);
    }
    const cancelled = this.cancelling || result.cancelled === true || result.stop_reason === "cancelled";
    this.close(cancelled ? "Cancelled." : "", "");
  }

  close(note, tone) {
    this.item.removeAttribute("aria-busy");
    this.item.classList.add("done");
    if (note) {
      this.note.textContent = note;
      this.note.className = `note ${tone}`;
      this.note.hidden = false;
    } else if (!this.hasText && this.tools.size === 0) {
      this.note.textContent = "(no answer)";
      this.note.hidden = false;
    }
  }
}

/** The text of a message's content: a string, or its text blocks. */
function blockTexts(content) {
  if (typeof content === "string") return [content];
  if (!Array.isArray(content)) return [];
  return content.filter((b) => b && b.type === "text" && typeof b.text === "string").map((b) => b.text);
}

function blocksOf(content, type) {
  return Array.isArray(content) ? content.filter((b) => b && b.type === type) : [];
}

export class Chat {
  constructor({ form, input, log, cancel, sessionLabel, newSession, sessions, send, request }) {
    this.form = form;
    this.input = input;
    this.log = log;
    this.cancelButton = cancel;
    this.sessionLabel = sessionLabel;
    this.send = send;
    this.request = request;
    this.pending = new Map();
    this.maxFrameBytes = 65536;
    this.online = false;
    this.shown = null; // the session whose history the log shows (null: not loaded yet)
    this.historyGeneration = 0;
    this.session = localStorage.getItem(SESSION_KEY);
    this.showSession();
    this.sessions = new SessionList({ ...sessions, chat: this });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      } else if (event.key === "Escape" && this.pending.size) {
        event.preventDefault();
        this.cancelAll();
      }
    });
    cancel.addEventListener("click", () => this.cancelAll());
    newSession.addEventListener("click", () => this.startSession());
  }

  showSession() {
    this.sessionLabel.textContent = this.session || "(new)";
  }

  /** A socket said hello: adopt its session if this page has none yet, show its history. */
  hello(frame) {
    this.online = true;
    if (typeof frame.max_frame_bytes === "number") this.maxFrameBytes = frame.max_frame_bytes;
    if (!this.session) {
      this.session = frame.session;
      localStorage.setItem(SESSION_KEY, this.session);
      this.showSession();
    }
    this.form.classList.remove("offline");
    if (this.shown !== this.session) this.loadHistory();
    this.sessions.refresh();
  }

  startSession() {
    this.session = newSessionId();
    localStorage.setItem(SESSION_KEY, this.session);
    this.shown = this.session; // nothing to load: it is new
    this.showSession();
    this.log.replaceChildren();
    this.system(`New session ${this.session}.`);
    this.sessions.render();
    this.input.focus();
  }

  /** Switch to the conversation `session` and show what it holds. */
  switchTo(session) {
    if (session === this.session) return;
    this.session = session;
    localStorage.setItem(SESSION_KEY, session);
    this.showSession();
    this.log.replaceChildren();
    this.shown = null;
    this.sessions.render();
    if (this.online) this.loadHistory();
  }

  /** Ask the LLM agent for this session's stored messages and draw them. */
  async loadHistory() {
    const session = this.session;
    const generation = ++this.historyGeneration; // only the latest load draws
    this.shown = session;
    let frame;
    try {
      frame = await this.request({
        type: "ask",
        actor: LLM_AGENT,
        message: { history: session },
        timeout: HISTORY_TIMEOUT_S,
      });
    } catch {
      this.shown = null; // offline: try again on the next hello
      return;
    }
    if (session !== this.session || generation !== this.historyGeneration) return;
    if (frame.type === "error") {
      if (frame.code !== "not_found") this.system(`The earlier messages cannot be shown: ${frame.error}`);
      return;
    }
    const messages = Array.isArray(frame.reply.messages) ? frame.reply.messages : [];
    if (!messages.length) return;
    const earlier = el("li", { class: "msg system history-mark", text: `Earlier in this session: ${frame.reply.turns} turn${frame.reply.turns === 1 ? "" : "s"}.` });
    const items = [earlier, ...historyItems(messages)];
    this.log.prepend(...items);
    this.log.scrollTop = this.log.scrollHeight;
  }

  owns(id) {
    return this.pending.has(id);
  }

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if (!this.online) {
      this.system("Not connected: the message was not sent. It will be possible again once the status says Live.");
      return;
    }
    const command = text.startsWith("/");
    const frame = { type: command ? "command" : "chat", text, session: this.session };
    if (new TextEncoder().encode(JSON.stringify(frame)).length > this.maxFrameBytes - 200) {
      this.system(`The message is too long (the service takes ${this.maxFrameBytes} bytes a frame): send it in parts.`);
      return;
    }
    const id = this.send(frame);
    if (id === null) return;
    const mention = /^@([\w.-]+)\s/.exec(text);
    const label = command ? text.split(/\s/)[0] : mention ? mention[1] : "main";
    this.append(el("li", { class: "msg user" }, el("p", { class: "who", text: "you" }), el("div", { class: "body", text })));
    const bubble = new Bubble(label);
    this.pending.set(id, bubble);
    this.append(bubble.item);
    this.input.value = "";
    this.cancelButton.disabled = false;
  }

  /** A frame about one of our requests. */
  frame(frame) {
    const bubble = this.pending.get(frame.id);
    if (bubble === undefined) return;
    const follow = nearBottom(this.log);
    if (frame.type === "stream") {
      for (const part of Array.isArray(frame.parts) ? frame.parts : []) bubble.part(part);
    } else if (frame.type === "stream_end" || frame.type === "reply" || frame.type === "error") {
      bubble.finish(frame);
      this.pending.delete(frame.id);
      this.cancelButton.disabled = this.pending.size === 0;
      if (frame.type === "stream_end") this.sessions.refresh();
    }
    if (follow) this.log.scrollTop = this.log.scrollHeight;
  }

  cancelAll() {
    for (const [id, bubble] of this.pending) {
      if (bubble.cancelling) continue;
      if (this.send({ type: "cancel", request: id }) !== null) {
        bubble.cancelling = true;
        bubble.note.textContent = "Cancelling…";
        bubble.note.hidden = false;
      }
    }
  }

  /** The socket went: what was still streaming will not end. */
  offline() {
    this.online = false;
    this.form.classList.add("offline");
    for (const bubble of this.pending.values()) {
      bubble.close("The connection was lost before this reply ended.", "error");
    }
    this.pending.clear();
    this.cancelButton.disabled = true;
  }

  /** A line from the page itself (not the service). */
  system(text) {
    this.append(el("li", { class: "msg system", text }));
  }

  append(item) {
    const follow = nearBottom(this.log);
    this.log.append(item);
    if (follow || item.classList.contains("user")) this.log.scrollTop = this.log.scrollHeight;
  }
}

/** The list items that draw stored messages: each user text, then one reply bubble for
 * what the assistant said and called until the next user text. */
function historyItems(messages) {
  const items = [];
  let bubble = null;
  const finish = () => {
    if (bubble !== null) bubble.close("", "");
    bubble = null;
  };
  for (const message of messages) {
    if (!message || typeof message !== "object") continue;
    if (message.role === "user") {
      for (const result of blocksOf(message.content, "tool_result")) {
        if (bubble !== null) bubble.tool("tool_end", { id: result.tool_use_id, name: bubble.toolName(result.tool_use_id), is_error: result.is_error === true });
      }
      const texts = blockTexts(message.content);
      if (texts.length) {
        finish();
        items.push(el("li", { class: "msg user history" }, el("p", { class: "who", text: "you" }), el("div", { class: "body", text: texts.join("\n") })));
      }
    } else if (message.role === "assistant") {
      if (bubble === null) {
        bubble = new Bubble(LLM_AGENT);
        bubble.item.classList.add("history");
        items.push(bubble.item);
      }
      const blocks = typeof message.content === "string" ? [{ type: "text", text: message.content }] : message.content;
      for (const block of Array.isArray(blocks) ? blocks : []) {
        if (block && block.type === "text" && typeof block.text === "string") bubble.write("text", block.text);
        else if (block && block.type === "tool_use") bubble.tool("tool_start", { id: block.id, name: block.name });
      }
    }
  }
  finish();
  return items;
}

/** The sessions list: the LLM agent's conversations, newest first; picking one switches. */
class SessionList {
  constructor({ toggle, panel, list, status, chat }) {
    this.toggle = toggle;
    this.panel = panel;
    this.list = list;
    this.status = status;
    this.chat = chat;
    this.known = [];
    this.loading = false;
    toggle.addEventListener("click", () => this.show(this.panel.hidden));
  }

  show(open) {
    this.panel.hidden = !open;
    this.toggle.setAttribute("aria-expanded", String(open));
    if (open) this.refresh();
  }

  /** Ask `/sessions` again (only while the list is open). */
  async refresh() {
    if (this.panel.hidden || this.loading || !this.chat.online) return;
    this.loading = true;
    this.status.textContent = "Loading…";
    let frame;
    try {
      frame = await this.chat.request({ type: "command", text: "/sessions" });
    } catch {
      this.status.textContent = "Not connected.";
      return;
    } finally {
      this.loading = false;
    }
    if (frame.type === "error") {
      this.status.textContent = frame.error;
      this.known = [];
    } else {
      const sessions = frame.reply && Array.isArray(frame.reply.sessions) ? frame.reply.sessions : [];
      this.known = sessions.slice().sort((a, b) => (b.updated_at ?? 0) - (a.updated_at ?? 0));
      this.status.textContent = "";
    }
    this.render();
  }

  render() {
    const current = this.chat.session;
    const entries = this.known.slice();
    if (current && !entries.some((entry) => entry.session === current)) {
      entries.unshift({ session: current, turns: 0, updated_at: null, cost_usd: 0, fresh: true });
    }
    this.list.replaceChildren(
      ...entries.map((entry) => {
        const when = typeof entry.updated_at === "number" ? clock(entry.updated_at) : "new";
        const turns = `${entry.turns} turn${entry.turns === 1 ? "" : "s"}`;
        const cost = typeof entry.cost_usd === "number" && entry.cost_usd > 0 ? ` · $${entry.cost_usd.toFixed(4)}` : "";
        const button = el(
          "button",
          { type: "button", class: "session-pick", "data-session": entry.session, "aria-current": entry.session === current ? "true" : null },
          el("code", { text: entry.session }),
          el("span", { class: "muted", text: `${turns} · ${when}${cost}${entry.running ? " · running" : ""}` }),
        );
        button.addEventListener("click", () => this.chat.switchTo(entry.session));
        return el("li", {}, button);
      }),
    );
    if (!entries.length && !this.status.textContent) this.status.textContent = "No sessions yet.";
  }
}
