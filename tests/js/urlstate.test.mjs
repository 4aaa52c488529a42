// The URL fragment (static/js/urlstate.js) and the state store (static/js/store.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Store } from "../../static/js/store.js";
import { urlCodec } from "../../static/js/urlstate.js";

const codec = urlCodec({ stats: ["entropy", "distance"], defaultStat: "entropy" });

test("a full link parses into the state it names", () => {
  const s = codec.parse("#text=The+cat+sat&pair=A+dog&model=minilm&view=stats&agg=rollout&layer=2&head=5&hide=1&merge=1&scale=viridis&range=one&stat=distance");
  assert.deepEqual(s, {
    text: "The cat sat",
    pair: "A dog",
    model: "minilm",
    view: "stats",
    agg: "rollout",
    layer: 2,
    head: 5,
    hide: true,
    merge: true,
    scale: "viridis",
    range: "one",
    stat: "distance",
    cmp: null,
    zoom: null,
    edit: null,
    pin: null,
    dir: "from",
  });
});

test("the text view's pinned token and direction round-trip; bad ones fall back", () => {
  const hash = "#view=text&agg=head&layer=1&head=2&pin=1500&dir=to";
  const s = codec.parse(hash);
  assert.deepEqual([s.pin, s.dir], [1500, "to"]);
  assert.equal(codec.format(s), hash);
  assert.deepEqual([codec.parse("#pin=-3&dir=up").pin, codec.parse("#pin=-3&dir=up").dir], [null, "from"]);
  assert.equal(codec.format({ ...codec.defaults, pin: 0 }), "#view=head&agg=head&layer=0&head=0&pin=0"); // 0 is a pin
});

test("anything unknown or out of range falls back to the default", () => {
  const s = codec.parse("view=nope&agg=sum&layer=-1&head=x&scale=rainbow&range=two&stat=bogus&hide=yes");
  assert.deepEqual(
    [s.text, s.model, s.view, s.agg, s.layer, s.head, s.scale, s.range, s.stat, s.hide],
    [null, null, "head", "head", 0, 0, "blues", "max", "entropy", false],
  );
  assert.equal(codec.parse("#layer=10000").layer, 0); // at most 9999
  assert.equal(codec.parse("#layer=9999").layer, 9999);
});

test("format leaves defaults out and always names view, aggregate, layer and head", () => {
  assert.equal(codec.format({ ...codec.defaults }), "#view=head&agg=head&layer=0&head=0");
  assert.equal(
    codec.format({ ...codec.defaults, text: "a&b=c", hide: true, scale: "magma", stat: "distance" }),
    "#text=a%26b%3Dc&view=head&agg=head&layer=0&head=0&hide=1&scale=magma&stat=distance",
  );
});

test("a comparison's inputs round-trip; a missing model stays null", () => {
  const hash = "#view=compare&agg=head&layer=1&head=2&a=The+cat&am=minilm&b=The+dog";
  const s = codec.parse(hash);
  assert.deepEqual(s.cmp, { a: "The cat", am: "minilm", b: "The dog", bm: null });
  assert.equal(codec.format(s), hash);
});

test("the store: setState makes a new frozen state, writes the URL once, tells subscribers what changed", () => {
  const written = [];
  const store = new Store(codec, { read: () => "#view=model&layer=3", write: (h) => written.push(h) });
  const first = store.state;
  assert.equal(first.view, "model");
  assert.ok(Object.isFrozen(first));
  const calls = [];
  store.subscribe((state, changed, options) => calls.push([state.layer, changed, options]));
  store.setState({ layer: 4, head: 0 }, { render: false });
  assert.notEqual(store.state, first);
  assert.equal(first.layer, 3); // the old state is unchanged
  assert.deepEqual(written, ["#view=model&agg=head&layer=4&head=0"]);
  assert.deepEqual(calls, [[4, ["layer"], { render: false }]]); // head was 0 already
  assert.equal(store.hash(), "#view=model&agg=head&layer=4&head=0");
});
