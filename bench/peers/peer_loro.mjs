/* SPDX-License-Identifier: Apache-2.0 */
// bench/peers/peer_loro.mjs — the standard workload on Loro (loro-crdt): one LoroMap "products"
// holding a LoroMap per product; live = doc.commit() after every update, batch = one commit.
// Delta: doc.export({mode: "update", from: <A's version after the catalogue>}); B imports it.
import { LoroDoc, LoroMap } from "loro-crdt";
import { main, pkgVersion } from "./common.mjs";

await main({
  name: "loro",
  version: pkgVersion("loro-crdt"),
  createA(cat) {
    const doc = new LoroDoc();
    const products = doc.getMap("products");
    const maps = [];
    for (const p of cat) {
      const m = products.setContainer(p.id, new LoroMap());
      m.set("name", p.name);
      m.set("price", p.price);
      m.set("stock", p.stock);
      maps.push(m);
    }
    doc.commit();
    return { doc, maps };
  },
  snapshot: (c) => c.doc.export({ mode: "snapshot" }),
  mark: (c) => c.doc.oplogVersion(),
  begin() {},
  write(c, idx, id, field, value, live) {
    c.maps[idx].set(field, value);
    if (live) c.doc.commit();
  },
  end: (c) => c.doc.commit(),
  delta: (c, vv) => c.doc.export({ mode: "update", from: vv }),
  loadB(bytes) {
    const doc = new LoroDoc();
    doc.import(bytes);
    return { doc };
  },
  merge: (c, delta) => c.doc.import(delta),
  rows(c) {
    const j = c.doc.getMap("products").toJSON();
    return Object.entries(j).map(([id, v]) => ({ id, ...v }));
  },
});
