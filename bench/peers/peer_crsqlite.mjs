/* SPDX-License-Identifier: Apache-2.0 */
// bench/peers/peer_crsqlite.mjs — the standard workload on cr-sqlite (@vlcn.io/crsqlite-wasm, the
// wasm build, in-memory databases): products made a CRR with crsql_as_crr; live = one
// autocommitted UPDATE per update, batch = BEGIN ... COMMIT around all. Delta: the rows of
// crsql_changes with db_version above A's after the catalogue, encoded as JSON (blobs in base64),
// since the package has no wire encoding of its own; B inserts them into its crsql_changes in one
// transaction. The same updates on a plain table in another database of the same build give the
// plain_write_ms baseline.
import { readFileSync } from "node:fs";
import { main, pkgVersion } from "./common.mjs";

// The package fetch()es its .wasm by file: URL, which Node's fetch does not serve: read the file.
const realFetch = globalThis.fetch;
globalThis.fetch = async (u, o) => {
  const s = String(u);
  if (!s.startsWith("file:")) return realFetch(u, o);
  return new Response(readFileSync(new URL(s)), { headers: { "Content-Type": "application/wasm" } });
};
// initWasm also registers an IndexedDB file system, which rejects in Node; only ":memory:" is used.
process.on("unhandledRejection", (e) => {
  if (!String(e && e.message).includes("open")) throw e;
});
const { default: initWasm } = await import("@vlcn.io/crsqlite-wasm");
const sqlite = await initWasm();

const COLS = `"table", "pk", "cid", "val", "col_version", "db_version", "site_id", "cl", "seq"`;
const SCHEMA = "CREATE TABLE products(id TEXT PRIMARY KEY NOT NULL, name TEXT, price INTEGER, stock INTEGER)";
const b64 = (v) => (v instanceof Uint8Array ? { b: Buffer.from(v).toString("base64") } : v);
const unb64 = (v) => (v && typeof v === "object" && "b" in v ? new Uint8Array(Buffer.from(v.b, "base64")) : v);

async function crr() {
  const db = await sqlite.open(":memory:");
  await db.exec(SCHEMA);
  await db.exec("SELECT crsql_as_crr('products')");
  return db;
}

async function changes(db, since) {
  const rows = await db.execA(`SELECT ${COLS} FROM crsql_changes WHERE db_version > ?`, [since]);
  return new TextEncoder().encode(JSON.stringify(rows.map((r) => r.map(b64))));
}

async function apply(db, bytes) {
  const rows = JSON.parse(new TextDecoder().decode(bytes));
  const st = await db.prepare(`INSERT INTO crsql_changes (${COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  await db.exec("BEGIN");
  for (const r of rows) await st.run(null, ...r.map(unb64));
  await db.exec("COMMIT");
  await st.finalize(null);
}

async function updates(db, w, live) {
  const st = [
    await db.prepare("UPDATE products SET price = ? WHERE id = ?"),
    await db.prepare("UPDATE products SET stock = ? WHERE id = ?"),
  ];
  const t0 = performance.now();
  if (!live) await db.exec("BEGIN");
  for (let i = 0; i < w.prod.length; i++) await st[i & 1].run(null, w.val[i], w.ids[w.prod[i]]);
  if (!live) await db.exec("COMMIT");
  return performance.now() - t0;
}

async function insertCatalogue(db, cat) {
  const st = await db.prepare("INSERT INTO products(id, name, price, stock) VALUES (?, ?, ?, ?)");
  await db.exec("BEGIN");
  for (const p of cat) await st.run(null, p.id, p.name, p.price, p.stock);
  await db.exec("COMMIT");
  await st.finalize(null);
}

await main({
  name: "crsqlite",
  version: pkgVersion("@vlcn.io/crsqlite-wasm"),
  note: "wasm build, in-memory, delta = crsql_changes rows as JSON",
  async createA(cat) {
    const db = await crr();
    await insertCatalogue(db, cat);
    const st = [
      await db.prepare("UPDATE products SET price = ? WHERE id = ?"),
      await db.prepare("UPDATE products SET stock = ? WHERE id = ?"),
    ];
    return { db, st, cat };
  },
  snapshot: (c) => changes(c.db, 0),
  async mark(c) {
    return (await c.db.execA("SELECT crsql_db_version()"))[0][0];
  },
  begin: (c) => c.db.exec("BEGIN"),
  write: (c, idx, id, field, value) => c.st[field === "price" ? 0 : 1].run(null, value, id),
  end: (c) => c.db.exec("COMMIT"),
  delta: (c, v) => changes(c.db, v),
  async loadB(bytes) {
    const db = await crr();
    await apply(db, bytes);
    return { db };
  },
  merge: (c, delta) => apply(c.db, delta),
  async rows(c) {
    return c.db.execO("SELECT id, name, price, stock FROM products");
  },
  // the same writes on a plain table of the same build, in its own database
  async plain(w, live) {
    const db = await sqlite.open(":memory:");
    await db.exec(SCHEMA);
    await insertCatalogue(db, w.catalogue);
    return updates(db, w, live);
  },
});
