/* SPDX-License-Identifier: Apache-2.0 */
// bench/peers/common.mjs — the standard workload of PERFORMANCE.md for the peers, with the same
// numbers as bench/bench_standard.c: the same splitmix64 generator and seed (20240601), so the
// catalogue (10,000 products "p00000".., name "Product N", random price and stock) and the
// 100,000 updates (random product, price on even updates, stock on odd ones, random values) are
// the ones tillsync gets.
//
// A peer script exports an adapter (see peer_*.mjs) and calls main(adapter). Run as
//   node peer_X.mjs a <shape> <dir> [products] [updates] [seed]   replica A: catalogue, updates, delta
//   node peer_X.mjs b <shape> <dir>                               replica B: loads the catalogue, merges
// Each role is its own node process, so its maxRSS (process.resourceUsage(), KiB) is its own. Each
// prints one JSON line. shape: "live" (one commit/transaction per update) or "batch" (one for all).
// B checks that it ends with exactly A's content (sha256 of the rows in key order).
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const M64 = (1n << 64n) - 1n;

export function rng(seed) {
  let s = BigInt.asUintN(64, BigInt(seed));
  return {
    next() {
      s = (s + 0x9e3779b97f4a7c15n) & M64;
      let z = s;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
      return z ^ (z >> 31n);
    },
    below(n) {
      return Number(this.next() % BigInt(n));
    },
  };
}

// The catalogue and the updates, exactly as bench_standard.c makes them (short keys).
export function workload(nprod, nupd, seed) {
  const ids = [];
  for (let i = 0; i < nprod; i++) ids.push("p" + String(i).padStart(5, "0"));
  const r = rng(seed);
  const prod = new Int32Array(nupd);
  const val = new Array(nupd);
  for (let i = 0; i < nupd; i++) {
    prod[i] = r.below(nprod);
    val[i] = i % 2 === 0 ? 100 + r.below(100000) : r.below(1000);
  }
  const c = rng(BigInt(seed) ^ 0xca7a109en);
  const catalogue = ids.map((id, i) => ({
    id,
    name: "Product " + i,
    price: 100 + c.below(100000),
    stock: c.below(1000),
  }));
  return { ids, prod, val, catalogue };
}

// sha256 of "id|name|price|stock\n" for every product in key order.
export function digest(rows) {
  rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const h = createHash("sha256");
  for (const r of rows) h.update(`${r.id}|${r.name}|${r.price}|${r.stock}\n`);
  return h.digest("hex");
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const rssKB = () => process.resourceUsage().maxRSS;
const maybe = async (x) => (x && typeof x.then === "function" ? await x : x);

async function roleA(ad, shape, dir, nprod, nupd, seed) {
  const w = workload(nprod, nupd, seed);
  const ctx = await maybe(ad.createA(w.catalogue));
  writeFileSync(join(dir, "catalogue.bin"), await maybe(ad.snapshot(ctx)));
  const mark = await maybe(ad.mark(ctx));
  const live = shape === "live";
  const fields = ["price", "stock"];
  const t0 = now();
  if (!live) await maybe(ad.begin(ctx));
  for (let i = 0; i < nupd; i++) {
    const r = ad.write(ctx, w.prod[i], w.ids[w.prod[i]], fields[i & 1], w.val[i], live);
    if (r && typeof r.then === "function") await r;
  }
  if (!live) await maybe(ad.end(ctx));
  const writeMs = now() - t0;
  const t1 = now();
  const delta = await maybe(ad.delta(ctx, mark));
  const encodeMs = now() - t1;
  writeFileSync(join(dir, "delta.bin"), delta);
  const dg = digest(await maybe(ad.rows(ctx)));
  writeFileSync(join(dir, "a.digest"), dg);
  let plainMs = null;
  if (ad.plain) plainMs = await ad.plain(w, live);
  return {
    role: "a",
    write_ms: writeMs,
    writes_per_s: nupd / (writeMs / 1e3),
    plain_write_ms: plainMs,
    encode_ms: encodeMs,
    delta_bytes: delta.length,
    rss_a_kb: rssKB(),
  };
}

async function roleB(ad, dir) {
  const rss0 = rssKB();
  const ctx = await maybe(ad.loadB(readFileSync(join(dir, "catalogue.bin"))));
  const delta = new Uint8Array(readFileSync(join(dir, "delta.bin")));
  const rssLoaded = rssKB();
  const t0 = now();
  await maybe(ad.merge(ctx, delta));
  const mergeMs = now() - t0;
  const rss = rssKB();
  const dg = digest(await maybe(ad.rows(ctx)));
  const want = readFileSync(join(dir, "a.digest"), "utf8");
  return {
    role: "b",
    merge_ms: mergeMs,
    rss_b_kb: rss,
    rss_b_start_kb: rss0,
    rss_b_loaded_kb: rssLoaded,
    identical: dg === want,
  };
}

export async function main(ad) {
  const [role, shape, dir, np, nu, sd] = process.argv.slice(2);
  if (!["a", "b"].includes(role) || !["live", "batch"].includes(shape) || !dir) {
    console.error(`usage: node peer_${ad.name}.mjs a|b live|batch DIR [products] [updates] [seed]`);
    process.exit(2);
  }
  let out;
  if (role === "a")
    out = await roleA(ad, shape, dir, Number(np || 10000), Number(nu || 100000), sd || 20240601);
  else out = await roleB(ad, dir);
  out.peer = ad.name;
  out.version = ad.version;
  out.shape = shape;
  out.note = ad.note || "";
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
}

// The version of an installed package (from its package.json).
export function pkgVersion(name) {
  const p = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(p, "utf8")).version;
}
