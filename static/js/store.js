// The page's one state store.
//
// The state is what the URL fragment holds (urlstate.js): {text, pair, model, view, agg, layer, head,
// hide, merge, scale, range, stat, cmp}; text, pair and model are those of the response shown, not of
// the text box. A state object is frozen and never changed: every change goes through
// store.setState(patch), which makes the next state, writes the URL (replacing the history entry, no
// new entry per slider step) and calls each subscriber with (state, changedKeys, options). main.js
// subscribes the form controls (Controls.render), the export buttons and the active view's redraw.
// Nothing else writes the state or the URL.

/** The browser's address bar; tests pass their own {read, write}. */
const locationHash = {
  read: () => location.hash,
  write: (hash) => {
    if (location.hash !== hash) history.replaceState(null, "", hash);
  },
};

const same = (a, b) => a === b || JSON.stringify(a) === JSON.stringify(b);

export class Store {
  /**
   * @param {{parse: (hash: string) => object, format: (state: object) => string}} codec from urlCodec()
   * @param {{read: () => string, write: (hash: string) => void}} url
   */
  constructor(codec, url = locationHash) {
    this.codec = codec;
    this.url = url;
    this.state = Object.freeze(codec.parse(url.read()));
    this.listeners = [];
  }

  /** @param {(state: object, changed: string[], options: object) => void} fn */
  subscribe(fn) {
    this.listeners.push(fn);
  }

  /**
   * Merge `patch` into the state, write the URL, tell the subscribers.
   * @param {object} patch some state fields
   * @param {{render?: boolean}} options render: false records the state without redrawing (a run
   *   that will draw when it returns)
   */
  setState(patch, options = {}) {
    const prev = this.state;
    const next = Object.freeze({ ...prev, ...patch });
    this.state = next;
    this.url.write(this.codec.format(next));
    const changed = Object.keys(patch).filter((key) => !same(prev[key], next[key]));
    for (const fn of this.listeners) fn(next, changed, options);
  }

  /** The fragment of the current state ('#' included). */
  hash() {
    return this.codec.format(this.state);
  }
}
