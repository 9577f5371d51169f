// Building the page's elements, and formatting the numbers and times they show.
//
// Everything the server sends is data, never markup: `el` sets text with text nodes
// and attributes with setAttribute, and refuses event-handler attributes, so that a
// name or a reply holding "<img onerror=...>" is shown as those characters.

/**
 * A new element: `el("li", {class: "event", title: "..."}, "text", child)`.
 * `text` sets the text content; `class` the class list; other keys are attributes
 * (null, undefined and false leave them out). Children are nodes or strings.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (/^on/i.test(key) || key === "innerHTML") throw new Error(`el: refusing ${key}`);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** Set an element's text only when it changed (keeps the DOM quiet on every tick). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** "14:03:27" for a Unix time in seconds (the browser's time zone). */
export function clock(seconds) {
  const date = typeof seconds === "number" ? new Date(seconds * 1000) : new Date();
  return date.toLocaleTimeString([], { hour12: false });
}

/** A count with thousands separators, or "–" for a missing one. */
export function count(value) {
  return typeof value === "number" ? Math.round(value).toLocaleString() : "–";
}

/** "12.5" / "0.25" / "–": a rate or a percentage, short. */
export function short(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  if (value >= 100) return Math.round(value).toLocaleString();
  return String(Math.round(value * 100) / 100);
}

/** "52 MB" for bytes. */
export function bytes(value) {
  if (typeof value !== "number") return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** Whether a scrolled list is at (or near) its bottom: then new content keeps it there. */
export function nearBottom(node) {
  return node.scrollHeight - node.scrollTop - node.clientHeight < 40;
}
