// The WebSocket to the service: opening it, reconnecting with backoff, numbering requests.
//
// The page is let in by its cookie (set when the banner's ?token= address was opened),
// which the browser sends with the handshake. When the socket closes, the connection
// retries after a growing delay (0.5 s, 1 s, 2 s... up to 15 s, with jitter), so that a
// restarted service is found again without a reload. A handshake that never got its
// `hello` may have been refused: a HEAD request tells a missing or stale cookie (401,
// 403) from a service that is down, and the status says which.

const BACKOFF_S = [0.5, 1, 2, 4, 8, 15];
const FINAL = new Set(["reply", "stream_end", "error"]);
const LOCKED_RETRY_S = 10;

/**
 * One logical connection over successive sockets.
 *
 * `onFrame(frame)` gets every server frame (the `hello` of each socket included);
 * `onStatus(state, detail)` is told "connecting", "live", "offline" (detail: seconds
 * until the next try, and the code and reason the last live socket closed with) or
 * "locked" (the service refuses this page);
 * `onClosed()` runs when a socket that was live goes away.
 */
export class Connection {
  constructor({ onFrame, onStatus, onClosed }) {
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onClosed = onClosed;
    this.session = null;
    this.socket = null;
    this.live = false;
    this.attempt = 0;
    this.nextId = 0;
    this.timer = null;
    this.lost = null; // how the last live socket closed, until the next hello
    this.waiting = new Map(); // request id -> {resolve, reject}, for request()
  }

  /** Open the first socket. */
  start() {
    this.open();
  }

  /** Send a request; it gets the next id ("p1", "p2"...) unless it has one. The id, or null when offline. */
  send(frame) {
    if (!this.live) return null;
    const id = frame.id ?? `p${++this.nextId}`;
    this.socket.send(JSON.stringify({ ...frame, id }));
    return id;
  }

  /**
   * Send a request and get its final frame (`reply`, `stream_end` or `error`) as a promise.
   * Its `stream` frames are not passed on. Rejects when offline, or when the socket closes
   * before the answer came (the request's outcome is then unknown).
   */
  request(frame) {
    const id = this.send(frame);
    if (id === null) return Promise.reject(new Error("not connected"));
    return new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  }

  /** Try again at once (after a countdown, or when the page is shown again). */
  retryNow() {
    if (this.socket !== null) return;
    clearTimeout(this.timer);
    this.open();
  }

  open() {
    this.timer = null;
    this.onStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = this.session ? `?session=${encodeURIComponent(this.session)}` : "";
    const socket = new WebSocket(`${scheme}//${location.host}/ws${query}`);
    this.socket = socket;
    socket.addEventListener("message", (event) => this.receive(event));
    socket.addEventListener("close", (event) => this.closed(event));
  }

  receive(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return; // the server sends JSON only; anything else is not ours to show
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.type === "hello") {
      this.live = true;
      this.attempt = 0;
      this.lost = null;
      this.onStatus("live");
    }
    const waiting = this.waiting.get(frame.id);
    if (waiting !== undefined && FINAL.has(frame.type)) {
      this.waiting.delete(frame.id);
      waiting.resolve(frame);
      return;
    }
    if (waiting !== undefined && frame.type === "stream") return;
    this.onFrame(frame);
  }

  async closed(event) {
    const wasLive = this.live;
    this.socket = null;
    this.live = false;
    if (wasLive) {
      this.lost = { code: event.code, reason: event.reason };
      for (const waiting of this.waiting.values()) {
        waiting.reject(new Error("the connection was lost before the answer came"));
      }
      this.waiting.clear();
      this.onClosed();
    }
    const locked = !wasLive && (await this.refused());
    if (this.socket !== null) return; // retried meanwhile (the page was shown again)
    let delay;
    if (locked) {
      delay = LOCKED_RETRY_S;
      this.onStatus("locked", { delay });
    } else {
      const base = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)];
      delay = base * (0.8 + Math.random() * 0.4);
      this.attempt += 1;
      this.onStatus("offline", { delay, ...(this.lost || { code: event.code, reason: event.reason }) });
    }
    this.timer = setTimeout(() => this.open(), delay * 1000);
  }

  /** Whether the service is up but refuses this page (no cookie, or one for an old token). */
  async refused() {
    try {
      const response = await fetch("/metrics", { method: "HEAD", cache: "no-store" });
      return response.status === 401 || response.status === 403;
    } catch {
      return false; // down: an ordinary retry
    }
  }
}
