// A question the page asks before doing what the reader may not want (switching accounts).
//
// One question at a time: asking another answers the open one as declined. Escape declines, and
// the decline button has the focus, so the safe answer is the one a stray Enter gives.

/** A modal <dialog> with a title, a sentence, and an accept and a decline button. */
export class ChoiceDialog {
  constructor({ dialog, title, text, accept, decline }) {
    this.el = { dialog, title, text, accept, decline };
    this._resolve = null;
    accept.addEventListener("click", () => this._answer(true));
    decline.addEventListener("click", () => this._answer(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      this._answer(false);
    });
  }

  /**
   * Ask; resolves true when the reader accepts, false otherwise.
   * @param {object} question `title`, `text`, `decline` (its label) and `accept` (null: only decline)
   */
  ask({ title, text, accept = null, decline }) {
    this._settle(false);
    const el = this.el;
    el.title.textContent = title;
    el.text.textContent = text;
    el.accept.hidden = !accept;
    el.accept.textContent = accept || "";
    el.decline.textContent = decline;
    if (!el.dialog.open) el.dialog.showModal();
    el.decline.focus();
    return new Promise((resolve) => {
      this._resolve = resolve;
    });
  }

  _answer(accepted) {
    this._settle(accepted);
    if (this.el.dialog.open) this.el.dialog.close();
  }

  _settle(accepted) {
    const resolve = this._resolve;
    this._resolve = null;
    if (resolve) resolve(accepted);
  }
}
