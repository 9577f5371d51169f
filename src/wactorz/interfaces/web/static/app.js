// The dashboard's entry point: routes the service's frames to the panels, shows the status.
//
// On every new socket it subscribes to the tree, events, alerts and metrics feeds
// (docs/websocket.md); a `snapshot` follows, then deltas. Chat frames go to the chat
// panel by request id; the details panel and the chat's history and sessions use
// `connection.request`, which hands each its own answer.

import { ActorDetails } from "./details.js";
import { ActorTree } from "./tree.js";
import { Chat } from "./chat.js";
import { Confirmation } from "./dialog.js";
import { Connection } from "./connection.js";
import { Feed, MetricsView, alertItem, eventItem } from "./feeds.js";

const FEEDS = ["tree", "events", "alerts", "metrics"];
const $ = (selector) => document.querySelector(selector);

const status = $("#status");
const statusText = $("#status-text");
const statusRetry = $("#status-retry"); // a countdown screen readers need not hear every second
const notice = $("#notice");
let countdown = null;

const request = (frame) => connection.request(frame);
const tree = new ActorTree({
  table: $("#tree"),
  empty: $("#tree-empty"),
  counter: $("#tree-count"),
  onGap: () => connection.send({ type: "snapshot" }),
  onSelect: (name) => {
    tree.select(name);
    details.select(name);
  },
});
const details = new ActorDetails({
  panel: $("#details"),
  confirm: new Confirmation($("#confirm")),
  request,
  tree,
});
const events = new Feed($("#events"));
const alerts = new Feed($("#alerts"));
const metrics = new MetricsView($("#metrics"), $("#health"));
const chat = new Chat({
  form: $("#chat-form"),
  input: $("#chat-input"),
  log: $("#chat-log"),
  cancel: $("#cancel"),
  sessionLabel: $("#session"),
  newSession: $("#new-session"),
  sessions: { toggle: $("#sessions-toggle"), panel: $("#sessions"), list: $("#sessions-list"), status: $("#sessions-status") },
  send: (frame) => connection.send(frame),
  request,
});

const connection = new Connection({
  onFrame: route,
  onStatus: showStatus,
  onClosed: () => {
    tree.stale();
    chat.offline();
    details.offline();
  },
});
connection.session = chat.session;

function route(frame) {
  switch (frame.type) {
    case "hello":
      $("#node").textContent = frame.node;
      $("#version").textContent = frame.version;
      document.title = `wactorz · ${frame.node}`;
      tree.hello(frame.node);
      chat.hello(frame);
      connection.session = chat.session;
      connection.send({ type: "subscribe", topics: FEEDS });
      details.connected();
      break;
    case "snapshot":
      tree.snapshot(frame);
      details.treeChanged();
      break;
    case "delta":
      tree.delta(frame);
      details.treeChanged();
      break;
    case "event":
      if (frame.missed) events.missed(frame.missed, "events");
      events.add(eventItem(frame.event));
      break;
    case "alert":
      if (frame.missed) alerts.missed(frame.missed, "alerts");
      alerts.add(alertItem(frame.alert));
      break;
    case "metrics":
      tree.health(frame.node, metrics.update(frame));
      break;
    default:
      if (chat.owns(frame.id)) chat.frame(frame);
      else if (frame.type === "error") showNotice(`The service refused a request: ${frame.error}`);
  }
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function showStatus(state, detail = {}) {
  clearInterval(countdown);
  status.dataset.state = state;
  statusRetry.textContent = "";
  if (state === "live") {
    statusText.textContent = "Live";
    showNotice("");
    return;
  }
  if (state === "connecting") {
    statusText.textContent = "Connecting…";
    return;
  }
  statusText.textContent = state === "locked" ? "Not signed in" : "Disconnected";
  const until = Date.now() + detail.delay * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    statusRetry.textContent = ` · retrying in ${left} s`;
  };
  tick();
  countdown = setInterval(tick, 500);
  if (state === "locked") {
    showNotice(
      "This service needs its token: open the address its banner printed " +
        "(http://HOST:PORT/?token=…). A service restarted without web.token set has a new token.",
    );
  } else if (detail.code === 1001) {
    showNotice("The service stopped. This page reconnects by itself when it is back.");
  } else {
    showNotice("The connection to the service is lost. This page reconnects by itself when it is back.");
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") connection.retryNow();
});

connection.start();
