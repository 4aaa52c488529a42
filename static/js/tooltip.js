// One floating tooltip for both views. Text only (textContent): tokens can never become markup.

export class Tooltip {
  constructor(el) {
    this.el = el;
  }

  /** @param {string[]} lines first line bold @param {number} x clientX @param {number} y clientY */
  show(lines, x, y) {
    const el = this.el;
    el.replaceChildren(
      ...lines.map((line, i) => {
        const div = document.createElement("div");
        div.className = i === 0 ? "tooltip-main" : "tooltip-sub";
        div.textContent = line;
        return div;
      }),
    );
    el.hidden = false;
    const pad = 14;
    const { width, height } = el.getBoundingClientRect();
    const left = x + pad + width > window.innerWidth ? x - pad - width : x + pad;
    const top = y + pad + height > window.innerHeight ? y - pad - height : y + pad;
    el.style.left = `${Math.max(4, left)}px`;
    el.style.top = `${Math.max(4, top)}px`;
  }

  hide() {
    this.el.hidden = true;
  }
}
