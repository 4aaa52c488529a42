// DOM helpers shared by every module that looks elements up.

/** The element with this id; throws when the page lacks it (tests/test_pages.py checks every id). */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`Page element #${id} is missing`);
  return el;
}
