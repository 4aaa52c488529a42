// A bounded cache of request promises, shared by the tabs that ask the API for derived data.

export class RequestCache {
  /** @param {number} limit entries kept; the oldest is dropped first */
  constructor(limit) {
    this.limit = limit;
    this.map = new Map(); // key -> Promise
  }

  /**
   * The promise cached under `key`, or a new one from `fetch()`. A rejected request is forgotten, so
   * the next visit retries instead of showing the old error.
   * @template T @param {string} key @param {() => Promise<T>} fetch @returns {Promise<T>}
   */
  get(key, fetch) {
    let pending = this.map.get(key);
    if (!pending) {
      if (this.map.size >= this.limit) this.map.delete(this.map.keys().next().value);
      pending = fetch();
      this.map.set(key, pending);
      pending.catch(() => {
        if (this.map.get(key) === pending) this.map.delete(key);
      });
    }
    return pending;
  }

  has(key) {
    return this.map.has(key);
  }
}
