/* SPDX-License-Identifier: Apache-2.0 */
// bench/peers/run.mjs — runs the standard workload (PERFORMANCE.md, the numbers of
// bench_standard) on every peer in both shapes and prints one line per peer and shape, then one
// RESULT line per figure like the C benchmarks. Replicas A and B of each run are separate node
// processes (peer_<name>.mjs a|b), so "B peak RSS" is B's own process (Node alone is ~45-65 MB of
// it: see "node at start"). A peer that cannot be loaded or run here is reported as NOT RUN with
// the reason; a peer whose B does not end identical to its A fails the run (exit 1).
//
// usage: node run.mjs [--peers loro,yjs,automerge,crsqlite] [--shapes live,batch] [--reps N]
//                     [--products N] [--updates N] [--seed S]
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf("--" + name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const peers = opt("peers", "loro,yjs,automerge,crsqlite").split(",");
const shapes = opt("shapes", "live,batch").split(",");
const reps = Number(opt("reps", "1"));
const nprod = opt("products", "10000");
const nupd = opt("updates", "100000");
const seed = opt("seed", process.env.TSYNC_BENCH_SEED || "20240601");

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const load = () => loadavg().map((x) => x.toFixed(2)).join(" ");
const MB = (kb) => (kb / 1024).toFixed(1);

console.log(`== peers: the standard workload (${nprod} products, ${nupd} updates, seed ${seed}) ` +
  `on ${peers.join(", ")}; shapes ${shapes.join(", ")}; ${reps} repetition(s), medians`);
console.log(`node ${process.version}, ${cpus().length} cores, load average ${load()}`);

const base = mkdtempSync(join(process.env.TSYNC_BENCH_DIR || tmpdir(), "peers-"));
const results = [];
let failed = false;
for (const peer of peers) {
  for (const shape of shapes) {
    const runs = [];
    let error = null;
    for (let k = 0; k < reps && !error; k++) {
      const dir = mkdtempSync(join(base, `${peer}-${shape}-`));
      try {
        const run = (role, extra) =>
          JSON.parse(execFileSync(process.execPath, [join(here, `peer_${peer}.mjs`), role, shape, dir, ...extra],
            { cwd: here, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 20 }).trim().split("\n").pop());
        const a = run("a", [nprod, nupd, seed]);
        const b = run("b", []);
        runs.push({ ...a, ...b });
      } catch (e) {
        error = String((e.stderr && e.stderr.toString().trim().split("\n").find((l) => /Error|error/.test(l))) || e.message).slice(0, 200);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    if (error) {
      console.log(`${peer.padEnd(10)} ${shape.padEnd(6)} NOT RUN: ${error}`);
      results.push({ peer, shape, error });
      continue;
    }
    const m = (k) => median(runs.map((r) => r[k]));
    const r = {
      peer, shape, version: runs[0].version, note: runs[0].note,
      writes_per_s: m("writes_per_s"), write_ms: m("write_ms"), encode_ms: m("encode_ms"),
      delta_bytes: m("delta_bytes"), merge_ms: m("merge_ms"), rss_b_kb: Math.max(...runs.map((x) => x.rss_b_kb)),
      rss_b_start_kb: m("rss_b_start_kb"), rss_a_kb: Math.max(...runs.map((x) => x.rss_a_kb)),
      identical: runs.every((x) => x.identical),
      plain_ratio: runs[0].plain_write_ms != null ? m("write_ms") / median(runs.map((x) => x.plain_write_ms)) : null,
    };
    results.push(r);
    if (!r.identical) failed = true;
    console.log(`${peer.padEnd(10)} ${shape.padEnd(6)} ${r.version.padEnd(8)} A ${(r.writes_per_s / 1e3).toFixed(1)}k writes/s` +
      (r.plain_ratio != null ? ` (${r.plain_ratio.toFixed(2)}x its plain table)` : "") +
      `, delta ${(r.delta_bytes / 1e6).toFixed(3)} MB, encode ${r.encode_ms.toFixed(0)} ms, B merge ${r.merge_ms.toFixed(0)} ms, ` +
      `B peak RSS ${MB(r.rss_b_kb)} MB (node at start ${MB(r.rss_b_start_kb)} MB), A peak RSS ${MB(r.rss_a_kb)} MB, ` +
      `${r.identical ? "A and B identical" : "A AND B DIFFER"}${r.note ? "; " + r.note : ""}`);
  }
}
console.log(`load average after the peers: ${load()}`);
console.log("");
for (const r of results) {
  const n = `${r.peer}.${r.shape}`;
  if (r.error) {
    console.log(`RESULT bench=peers name=${n} status=NOT_RUN reason="${r.error.replace(/"/g, "'")}"`);
    continue;
  }
  const v = `version=${r.version} updates=${nupd}`;
  console.log(`RESULT bench=peers name=${n}.write_rate value=${r.writes_per_s.toFixed(0)} unit=w/s ${v}` +
    (r.plain_ratio != null ? ` plain_ratio=${r.plain_ratio.toFixed(3)}` : ""));
  console.log(`RESULT bench=peers name=${n}.encode value=${r.encode_ms.toFixed(1)} unit=ms ${v}`);
  console.log(`RESULT bench=peers name=${n}.delta_bytes value=${r.delta_bytes} unit=B ${v}`);
  console.log(`RESULT bench=peers name=${n}.merge value=${r.merge_ms.toFixed(1)} unit=ms ${v}`);
  console.log(`RESULT bench=peers name=${n}.rss_b value=${MB(r.rss_b_kb)} unit=MB node_start_mb=${MB(r.rss_b_start_kb)} ${v}`);
  console.log(`RESULT bench=peers name=${n}.rss_a value=${MB(r.rss_a_kb)} unit=MB ${v}`);
}
rmSync(base, { recursive: true, force: true });
if (failed) {
  console.log("peers: FAILED: a peer's B did not end identical to its A");
  process.exit(1);
}
console.log("peers: every peer that ran ended with B identical to A");
