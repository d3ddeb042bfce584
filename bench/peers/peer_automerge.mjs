/* SPDX-License-Identifier: Apache-2.0 */
// bench/peers/peer_automerge.mjs — the standard workload on Automerge: a document
// { products: { <id>: { name, price, stock } } }. A writes through Automerge's own low-level
// handle (Automerge.getBackend: put + commit), because the immutable proxy API (Automerge.change)
// costs ~25 ms per change on a 10,000-product document here (it copies the products object on
// every change), which would make the live shape take most of an hour; live = one commit per
// update, batch = one commit for all. Delta: saveSince(<heads after the catalogue>); B loads the
// catalogue and applies the delta with the public Automerge.loadIncremental, as an app would.
import * as A from "@automerge/automerge";
import { main, pkgVersion } from "./common.mjs";

await main({
  name: "automerge",
  version: pkgVersion("@automerge/automerge"),
  note: "A writes via getBackend put+commit; B via loadIncremental",
  createA(cat) {
    const doc = A.change(A.init(), (d) => {
      d.products = {};
      for (const p of cat) d.products[p.id] = { name: p.name, price: p.price, stock: p.stock };
    });
    const objs = cat.map((p) => A.getObjectId(doc.products[p.id]));
    return { h: A.getBackend(doc), objs };
  },
  snapshot: (c) => c.h.save(),
  mark: (c) => c.h.getHeads(),
  begin() {},
  write(c, idx, id, field, value, live) {
    c.h.put(c.objs[idx], field, value, "int");
    if (live) c.h.commit();
  },
  end: (c) => c.h.commit(),
  delta: (c, heads) => c.h.saveSince(heads),
  loadB: (bytes) => ({ doc: A.load(new Uint8Array(bytes)) }),
  merge(c, delta) {
    c.doc = A.loadIncremental(c.doc, delta);
  },
  rows(c) {
    const j = c.h ? c.h.materialize("/").products : A.toJS(c.doc).products;
    return Object.entries(j).map(([id, v]) => ({ id, ...v }));
  },
});
