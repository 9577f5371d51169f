// The confirmation asked before a control changes the system: an in-page modal <dialog>.
//
// `window.confirm` would block the page's script (frames would pile up unread) and cannot
// be styled or driven like the rest of the page; a <dialog> opened with showModal() keeps
// focus inside it, closes on Esc (as a "no"), and leaves the page running underneath.

/** Asks yes-or-no questions in the page's one <dialog id="confirm">. */
export class Confirmation {
  constructor(dialog) {
    this.dialog = dialog;
    this.title = dialog.querySelector("[data-part=title]");
    this.body = dialog.querySelector("[data-part=body]");
    this.yes = dialog.querySelector("button[value=confirm]");
    this.settle = null;
    dialog.addEventListener("close", () => {
      const settle = this.settle;
      this.settle = null;
      if (settle) settle(dialog.returnValue === "confirm");
    });
  }

  /**
   * Show the question; resolves true when the user confirms, false when they cancel or
   * press Esc. `action` labels the confirming button ("Stop"); `danger` colours it.
   */
  ask({ title, body, action, danger = false }) {
    // One question at a time (the dialog is modal: the page cannot ask another meanwhile).
    if (this.dialog.open) return Promise.resolve(false);
    this.title.textContent = title;
    this.body.textContent = body;
    this.yes.textContent = action;
    this.yes.classList.toggle("danger", danger);
    this.dialog.returnValue = "";
    return new Promise((resolve) => {
      this.settle = resolve;
      this.dialog.showModal();
      this.dialog.querySelector("button[value=cancel]").focus();
    });
  }
}
