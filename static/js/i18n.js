// The interface's messages in the page's language: the catalogue (app/i18n/<lang>.json) that the
// template embeds in #app's data-messages, the same one /api/messages serves. Placeholders are
// {name}, as in Python's str.format. Outside a page (node unit tests) there is no catalogue and a
// message is its key.

function embedded() {
  const app = globalThis.document?.getElementById("app");
  return {
    lang: app?.dataset.lang || "en",
    messages: app?.dataset.messages ? JSON.parse(app.dataset.messages) : {},
  };
}

let catalogue = embedded();

/** The page's language ("en" or "zh-CN"). */
export function lang() {
  return catalogue.lang;
}

/** Use `messages` (key -> text) in language `code`: for tests. */
export function setMessages(code, messages) {
  catalogue = { lang: code, messages };
}

/**
 * The message `key` with its {name} placeholders filled from `params`; the key itself when the
 * catalogue lacks it, a placeholder left as is when `params` lacks it.
 */
export function t(key, params = {}) {
  const text = catalogue.messages[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (Object.hasOwn(params, name) ? String(params[name]) : whole));
}

/** `key` when the catalogue has it, else null: for codes (error titles) that may have no message. */
export function maybe(key, params = {}) {
  return Object.hasOwn(catalogue.messages, key) ? t(key, params) : null;
}
