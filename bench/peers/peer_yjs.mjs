/* SPDX-License-Identifier: Apache-2.0 */
// bench/peers/peer_yjs.mjs — the standard workload on Yjs: a Y.Map "products" holding a Y.Map per
// product; live = one doc.transact() per update, batch = one transact for all. Delta:
// Y.encodeStateAsUpdateV2(doc, <A's state vector after the catalogue>) (the v2 encoding, as in
// PERFORMANCE.md); B applies it with Y.applyUpdateV2.
import * as Y from "yjs";
import { main, pkgVersion } from "./common.mjs";

await main({
  name: "yjs",
  version: pkgVersion("yjs"),
  note: "v2 encoding",
  createA(cat) {
    const doc = new Y.Doc();
    const products = doc.getMap("products");
    const maps = [];
    doc.transact(() => {
      for (const p of cat) {
        const m = new Y.Map();
        products.set(p.id, m);
        m.set("name", p.name);
        m.set("price", p.price);
        m.set("stock", p.stock);
        maps.push(m);
      }
    });
    return { doc, maps };
  },
  snapshot: (c) => Y.encodeStateAsUpdateV2(c.doc),
  mark: (c) => Y.encodeStateVector(c.doc),
  begin(c) {
    c.pending = [];
  },
  write(c, idx, id, field, value, live) {
    if (live) c.doc.transact(() => c.maps[idx].set(field, value));
    else c.pending.push([idx, field, value]);
  },
  // batch: every update inside one transaction (a Yjs transaction is a callback)
  end(c) {
    c.doc.transact(() => {
      for (const [idx, field, value] of c.pending) c.maps[idx].set(field, value);
    });
    c.pending = [];
  },
  delta: (c, sv) => Y.encodeStateAsUpdateV2(c.doc, sv),
  loadB(bytes) {
    const doc = new Y.Doc();
    Y.applyUpdateV2(doc, bytes);
    return { doc };
  },
  merge: (c, delta) => Y.applyUpdateV2(c.doc, delta),
  rows(c) {
    const j = c.doc.getMap("products").toJSON();
    return Object.entries(j).map(([id, v]) => ({ id, ...v }));
  },
});
