// SPDX-License-Identifier: Apache-2.0
// tests/browser/console.test.js — the shop console (docs/CONSOLE.md) in headless Chromium, the way
// a person uses it. Two enrolled tills (till-a, till-b) run `tillsync run` on loopback (--no-mdns,
// each given the other's address); each console is opened with its /?token=... address in a
// browser context of its own (cookies are per host, not per port: one jar would mix the tills'
// sessions). The flows:
//   overview   each page shows the other till connected and the indicator synced;
//   pages      the <nav> links show one page at a time, the indicator stays;
//   conflicts  the tills wrote the same field while apart: on till A's conflicts page a click on
//              "take-other" resolves it; A's page shows it resolved, and so do B's API and B's
//              page, and B's row holds the loser's value;
//   io         a CSV uploaded on A's io page (preview, then import) reaches till B; a CSV with a
//              bad value shows "line L, column C" and writes nothing; the export link follows
//              the selects;
//   backups    "back up now", then verify and the download link of the file;
//   schema     the replicated table with its columns and policies, the migrations.
// Every wait polls its condition with a deadline, no fixed sleeps. Each miss prints one line
// "FAIL: flow: what" (and a screenshot fail-*.png); the exit status is 1 on any miss.
// Screenshots of every page go to SHOTS_DIR; each path is printed as "screenshot: PATH".
//
// usage: node tests/browser/console.test.js PATH/TO/tillsync SHOTS_DIR [--readme-shot FILE.png]
//   (tests/browser/run.sh installs puppeteer-core first; ctest runs it as browser_console)
// --readme-shot FILE.png also writes the overview of till A (two tills connected, the indicator)
// there: tests/browser/screenshot-readme.sh makes docs/console-overview.png so.
// Environment: CHROMIUM (default /usr/bin/chromium), KEEP=1 keeps the tills' folder.
'use strict';

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const puppeteer = require('puppeteer-core');

const args = process.argv.slice(2);
const T = args[0];
const SHOTS = args[1];
const readmeAt = args.indexOf('--readme-shot');
const README_SHOT = readmeAt >= 0 ? path.resolve(args[readmeAt + 1] || '') : null;
if (!T || !SHOTS || (readmeAt >= 0 && !args[readmeAt + 1])) {
  console.log('FAIL: usage: node console.test.js PATH/TO/tillsync SHOTS_DIR [--readme-shot FILE.png]');
  process.exit(1);
}
const W = fs.mkdtempSync(path.join(os.tmpdir(), 'tillsync-browser.'));
fs.mkdirSync(SHOTS, { recursive: true });

// Deadlines. Nodes on a loaded 2-core machine connect within seconds; a slow CI gets headroom.
const CONNECT_MS = 30000;
const STEP_MS = 15000;

let failures = 0;
let checks = 0;
const nodes = [];
let browser = null;

function fail(what) {
  failures++;
  console.log('FAIL: ' + what);
}

// ---------------------------------------------------------------- the tills
function tsync(...a) {
  return execFileSync(T, a, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}
// `tillsync status` exits 3 while no node runs; its report is printed all the same.
function statusText(db) {
  try {
    return tsync('status', db);
  } catch (e) {
    return String(e.stdout || '');
  }
}
function sql(db, q) { return tsync('sql', db, q); }

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

// waitFor(what, fn, ms): polls fn (sync or async) every 100 ms until it returns something truthy,
// which it returns; throws "timed out after N s waiting for WHAT (last: ...)" otherwise.
async function waitFor(what, fn, ms = STEP_MS) {
  const end = Date.now() + ms;
  let last = '';
  for (;;) {
    try {
      const v = await fn();
      if (v) {
        if (Date.now() - (end - ms) > 3000) console.log(`  (${((Date.now() - end + ms) / 1000).toFixed(1)} s: ${what})`);
        return v;
      }
      last = 'false';
    } catch (e) {
      last = e.message.split('\n')[0];
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what} (last: ${last})`);
    await new Promise(r => setTimeout(r, 100));
  }
}

function check(cond, what) {
  checks++;
  if (!cond) throw new Error(what);
}

// api(till, path, init): the till's API with its token (as an app would: Bearer, no CSRF).
async function api(till, p, init = {}) {
  const r = await fetch(till.base + p, {
    ...init, headers: { Authorization: 'Bearer ' + till.token, ...(init.headers || {}) }
  });
  const body = await r.text();
  let json = null;
  try { json = JSON.parse(body); } catch (e) { /* not JSON: body says what */ }
  return { status: r.status, headers: r.headers, body, json };
}

// The conflict entries of GET /api/conflicts: the contract's object holding an array of entries
// (store/conflicts.c's list is that array itself: both are read).
async function conflicts(till) {
  const r = await api(till, '/api/conflicts');
  check(r.status === 200, `${till.name}: GET /api/conflicts answered ${r.status}: ${r.body.slice(0, 200)}`);
  if (Array.isArray(r.json)) return r.json;
  const arr = r.json && Object.values(r.json).find(Array.isArray);
  check(arr, `${till.name}: GET /api/conflicts holds no array of entries: ${r.body.slice(0, 200)}`);
  return arr;
}

async function setupTills() {
  const names = ['a', 'b'];
  const tills = {};
  // One migration applied on both (a local table): the schema page lists it.
  fs.mkdirSync(path.join(W, 'migrations'));
  fs.writeFileSync(path.join(W, 'migrations', '001_notes.sql'), 'CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);\n');
  tsync('shop', 'create', path.join(W, 'shop.key'), '--name', 'Corner Shop');
  for (const n of names) {
    const db = path.join(W, 'till-' + n + '.db');
    tsync('init', db);
    sql(db, 'CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER)');
    tsync('replicate', db, 'products');
    tsync('enrol', db, '--shop-key', path.join(W, 'shop.key'), '--name', 'till-' + n);
    tsync('migrate', db, path.join(W, 'migrations'));
    const key = JSON.parse(tsync('state', db, '--json')).public_key;
    check(/^[0-9a-f]{64}$/.test(key || ''), `till-${n}: no public key in state --json`);
    tills[n] = { name: 'till-' + n, db, key, port: await freePort() };
  }
  // p1 and p2 on both (a bundle, no nodes yet), then both change their prices while apart: two
  // conflicts once they connect (p1 taken, p2 dismissed).
  const a = tills.a, b = tills.b;
  sql(a.db, "INSERT INTO products VALUES('p1','tea',100),('p2','jam',200)");
  fs.writeFileSync(path.join(W, 'b.state'), tsync('state', b.db, '--json'));
  tsync('bundle', a.db, path.join(W, 'p1.bundle'), '--since', path.join(W, 'b.state'));
  tsync('merge', b.db, path.join(W, 'p1.bundle'));
  check(sql(b.db, "SELECT price FROM products WHERE id='p1'") === '100', 'till-b lacks p1 after the bundle');
  sql(a.db, "UPDATE products SET price = 111 WHERE id = 'p1'");
  sql(b.db, "UPDATE products SET price = 222 WHERE id = 'p1'");
  sql(a.db, "UPDATE products SET price = 201 WHERE id = 'p2'");
  sql(b.db, "UPDATE products SET price = 202 WHERE id = 'p2'");
  fs.mkdirSync(path.join(W, 'bk-a'));
  for (const [me, other] of [[a, b], [b, a]]) {
    const log = fs.openSync(me.db + '.log', 'w');
    const argv = ['run', me.db, '--no-mdns', '--listen', `tcp://127.0.0.1:${me.port}`,
      '--peer', `tcp://127.0.0.1:${other.port}#${other.key}`];
    if (me === a) argv.push('--backup-dir', path.join(W, 'bk-a'));
    const child = spawn(T, argv, { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    nodes.push(child);
    me.child = child;
  }
  for (const t of [a, b]) {
    const url = await waitFor(`${t.name}'s console address in tillsync status`, () => {
      if (t.child.exitCode !== null) throw new Error(`node exited ${t.child.exitCode}: ${fs.readFileSync(t.db + '.log', 'utf8')}`);
      const m = /^console: (http:\/\/127\.0\.0\.1:\d+\/)\?token=([0-9a-f]{64})$/m.exec(statusText(t.db));
      return m && { url: m[0].slice('console: '.length), base: m[1].slice(0, -1), token: m[2] };
    }, CONNECT_MS);
    Object.assign(t, url);
  }
  return tills;
}

// ---------------------------------------------------------------- the pages
async function shot(page, name) {
  const f = path.resolve(SHOTS, name + '.png');
  await page.screenshot({ path: f, fullPage: true });
  console.log('screenshot: ' + f);
  return f;
}

async function openConsole(till) {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  await page.setViewport({ width: 1280, height: 860 });
  page.errors = [];
  page.on('pageerror', e => page.errors.push(e.message));
  page.on('console', m => {
    // The console serves no favicon.ico (404): every other error the page logs is shown.
    if (m.type() === 'error' && !/\/favicon\.ico$/.test(m.location().url || '')) console.log(`${till.name} page console: ${m.text()} ${m.location().url || ''}`);
  });
  page.on('dialog', d => d.accept());
  const r = await page.goto(till.url, { waitUntil: 'load' });
  check(r && r.ok(), `${till.name}: opening ${till.base}/?token=… answered ${r && r.status()}`);
  check(!page.url().includes('token='), `${till.name}: the token stayed in the address bar: ${page.url()}`);
  till.page = page;
  return page;
}

const textOf = (page, sel) => page.$eval(sel, el => el.textContent.trim()).catch(() => null);

// The rows of a table as arrays of cell texts (rows with <td> only: no header rows).
function rowsOf(page, sel) {
  return page.$$eval(sel + ' tr', trs => trs.filter(tr => tr.querySelector('td'))
    .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent.trim())));
}

// goPage(page, NAME): clicks the <nav> link to #NAME; waits until #page-NAME is the one page shown
// and the indicator is still there.
async function goPage(page, name) {
  const link = await page.$(`nav a[href="#${name}"]`);
  check(link, `no <nav> link to #${name}`);
  await link.click();
  await waitFor(`#page-${name} shown alone`, () => page.evaluate(n => {
    const shown = el => !!el && !el.hidden && getComputedStyle(el).display !== 'none' && el.getClientRects().length > 0;
    const pages = [...document.querySelectorAll('section.page')];
    const me = document.getElementById('page-' + n);
    return location.hash === '#' + n && shown(me) && me.classList.contains('page') &&
      pages.every(p => p === me || !shown(p)) && shown(document.getElementById('indicator'));
  }, name));
}

// The overview of TILL shows OTHER connected (first cell its name) and the indicator synced.
async function overviewShows(till, other) {
  const page = till.page;
  return waitFor(`${till.name}'s overview showing ${other.name} connected and the indicator synced`, async () => {
    const rows = await rowsOf(page, '#tills tbody');
    const row = rows.find(r => r[0] === other.name);
    const state = await textOf(page, '#state');
    const ind = await page.$eval('#indicator', el => el.className).catch(() => '');
    if (!row || !row.some(c => /^connected\b/.test(c)) || state !== 'synced' || !/\bsynced\b/.test(ind))
      throw new Error(`rows ${JSON.stringify(rows)}, state ${state}, indicator class ${ind}`);
    return true;
  }, CONNECT_MS);
}

// ---------------------------------------------------------------- the flows
async function flowOverview(a, b) {
  for (const [me, other] of [[a, b], [b, a]]) {
    await openConsole(me);
    await overviewShows(me, other);
    const q = await textOf(me.page, '#queue');
    check(q && /Waiting to be sent/.test(q), `${me.name}: the queue is not shown: ${q}`);
    await waitFor(`${me.name}: #queue saying when every till was last current`, async () =>
      /Last synced\s*\d+ s ago/.test((await textOf(me.page, '#queue')) || ''));
    await shot(me.page, 'overview-' + me.name);
  }
}

async function flowPages(a) {
  for (const n of ['conflicts', 'backups', 'io', 'schema', 'overview'])
    await goPage(a.page, n);
  check((await rowsOf(a.page, '#tills tbody')).length === 1, 'the overview lost its tills after navigating');
}

// The conflict on ID's price (open unless pred says otherwise) as the API lists it on TILL.
async function priceConflict(till, id, pred = e => e.open) {
  return waitFor(`${till.name}'s conflict on products ${id} price in /api/conflicts`, async () =>
    (await conflicts(till)).find(e => e.table === 'products' && e.column === 'price' &&
      JSON.stringify(e.key) === `["${id}"]` && pred(e)), CONNECT_MS);
}
const p1Conflict = (till, pred) => priceConflict(till, 'p1', pred);

// The conflicts page of TILL with "open only" set to OPEN: waits for the row of entry ID
// satisfying pred(cells, text); returns its cells.
async function conflictRow(till, id, open, what, pred) {
  const page = till.page;
  const box = await page.$('#conflicts-open-only');
  check(box, `${till.name}: no #conflicts-open-only checkbox`);
  if ((await box.evaluate(el => el.checked)) !== open) await box.click();
  return waitFor(`${till.name}'s conflicts page: row ${id} ${what}`, async () => {
    const cells = await page.$$eval(`#conflicts tbody tr[data-id="${id}"] td`,
      tds => tds.map(td => td.textContent.trim()));
    if (!cells.length) throw new Error(`no row tr[data-id="${id}"]: ${await textOf(page, '#conflicts')}`);
    if (!pred(cells, cells.join(' | '))) throw new Error(cells.join(' | '));
    return cells;
  });
}

async function flowConflicts(a, b) {
  const ea = await p1Conflict(a);
  const eb = await p1Conflict(b, e => e.cid === ea.cid);
  check(eb.open, `till-b's entry is not open: ${JSON.stringify(eb)}`);
  const win = ea.winner.value, lose = ea.loser.value;
  check([win, lose].sort().join() === '111,222', `winner/loser are not 111 and 222: ${JSON.stringify(ea)}`);
  check(ea.winner.till && ea.loser.till, `till names missing in the entry: ${JSON.stringify(ea)}`);

  const page = a.page;
  await goPage(page, 'conflicts');
  check(await page.$eval('#conflicts-open-only', el => el.checked), '"open only" is not checked by default');
  const open = await conflictRow(a, ea.id, true, 'open with both values and till names', (c, t) =>
    t.includes('products') && t.includes('p1') && t.includes('price') && t.includes(String(win)) &&
    t.includes(String(lose)) && t.includes(ea.winner.till) && t.includes(ea.loser.till) &&
    c.some(x => x === 'open'));
  check(open, 'no open row');
  for (const sel of ['button[data-action="keep"]', 'button[data-action="take-other"]',
    'input.value-input', 'button[data-action="value"]', 'input.select'])
    check(await page.$(`#conflicts tbody tr[data-id="${ea.id}"] ${sel}`), `the open row has no ${sel}`);
  await shot(page, 'conflicts-till-a-open');

  const resolved = page.waitForResponse(r => r.request().method() === 'POST' &&
    r.url().endsWith(`/api/conflicts/${ea.id}/resolve`), { timeout: STEP_MS });
  await page.click(`#conflicts tbody tr[data-id="${ea.id}"] button[data-action="take-other"]`);
  const resp = await resolved;
  const body = await resp.json().catch(() => null);
  check(resp.status() === 200 && body && body.id === ea.id && body.resolved && body.resolved.how === 'take',
    `POST resolve answered ${resp.status()}: ${JSON.stringify(body)} (request ${resp.request().postData()})`);
  check(JSON.parse(resp.request().postData() || 'null')?.take === 'other',
    `the take-other button sent ${resp.request().postData()}, not {"take":"other"}`);
  // Open only: the row leaves the list once it reloads; all: it shows resolved.
  await waitFor('the resolved row to leave the open-only list', async () =>
    !(await page.$(`#conflicts tbody tr[data-id="${ea.id}"]`)));
  await conflictRow(a, ea.id, false, 'resolved: take by till-a', (c, t) => /resolved: take\b.*\bby till-a\b/.test(t));
  const errA = await textOf(page, '#conflicts-error');
  check(!errA, `#conflicts-error shows: ${errA}`);
  await shot(page, 'conflicts-till-a-resolved');
  check(sql(a.db, "SELECT price FROM products WHERE id='p1'") === String(lose),
    `till-a's p1 price is not the loser's ${lose}`);

  // Till B: its API, its row, its page.
  const rb = await p1Conflict(b, e => e.cid === ea.cid && !e.open);
  check(rb.resolved && rb.resolved.how === 'take' && rb.resolved.till === 'till-a' &&
    String(rb.resolved.value) === String(lose),
  `till-b's entry: ${JSON.stringify(rb.resolved)}, want take ${lose} by till-a`);
  await waitFor(`till-b's p1 price to be the loser's ${lose}`, () =>
    sql(b.db, "SELECT price FROM products WHERE id='p1'") === String(lose));
  await goPage(b.page, 'conflicts');
  await waitFor(`till-b's open-only list without entry ${rb.id}`, async () =>
    !(await b.page.$(`#conflicts tbody tr[data-id="${rb.id}"]`)));
  await conflictRow(b, rb.id, false, 'resolved: take by till-a', (c, t) =>
    /resolved: take\b.*\bby till-a\b/.test(t) && t.includes(String(lose)));
  await shot(b.page, 'conflicts-till-b-resolved');

  // p2: ticked and dismissed on till A; B's API shows it dismissed by till-a.
  const d = await priceConflict(a, 'p2');
  const page2 = a.page;
  await conflictRow(a, d.id, true, 'open', c => c.some(x => x === 'open'));
  await page2.click(`#conflicts tbody tr[data-id="${d.id}"] input.select`);
  const dismissed = page2.waitForResponse(r => r.request().method() === 'POST' &&
    r.url().endsWith('/api/conflicts/dismiss'), { timeout: STEP_MS });
  await page2.click('#dismiss-selected');
  const dr = await dismissed;
  const dj = await dr.json().catch(() => null);
  check(dr.status() === 200 && dj && dj.dismissed === 1 &&
    JSON.stringify(JSON.parse(dr.request().postData() || 'null')) === JSON.stringify({ ids: [d.id] }),
  `dismiss selected sent ${dr.request().postData()}, answered ${dr.status()} ${JSON.stringify(dj)}`);
  await waitFor('the dismissed row to leave the open-only list', async () =>
    !(await page2.$(`#conflicts tbody tr[data-id="${d.id}"]`)));
  await waitFor('#no-conflicts shown with nothing open', () =>
    page2.$eval('#no-conflicts', el => !el.hidden && el.getClientRects().length > 0).catch(() => false));
  const db2 = await priceConflict(b, 'p2', e => !e.open);
  check(db2.resolved && db2.resolved.how === 'dismissed' && db2.resolved.till === 'till-a',
    `till-b's p2 entry: ${JSON.stringify(db2.resolved)}, want dismissed by till-a`);
}

async function preview(page, file) {
  const input = await page.$('input#import-file');
  check(input, 'no input#import-file');
  await input.uploadFile(file);
  const answered = page.waitForResponse(r => r.request().method() === 'POST' &&
    r.url().includes('/api/import?') && r.url().includes('dry_run=1'), { timeout: STEP_MS });
  await page.click('button#import-preview');
  const r = await answered;
  check(/[?&]table=products\b/.test(r.url()) && /[?&]format=csv\b/.test(r.url()),
    `the preview asked ${r.url()}`);
  return r;
}

const disabled = (page, sel) => page.$eval(sel, el => el.disabled);

async function flowIo(a, b) {
  const page = a.page;
  await goPage(page, 'io');
  await waitFor('products among the import tables', () =>
    page.$$eval('select#import-table option', os => os.some(o => o.value === 'products')));
  await page.select('select#import-table', 'products');
  await page.select('select#import-format', 'csv');
  check(await disabled(page, 'button#import-run'), 'import is enabled before any preview');

  const good = path.join(W, 'new-products.csv');
  fs.writeFileSync(good, 'id,name,price\nn1,bread,250\nn2,milk,120\nn3,honey,640\n');
  await preview(page, good);
  const rows = await waitFor('the preview rows', async () => {
    const r = await rowsOf(page, 'table#import-rows');
    return r.length === 3 && r;
  });
  for (const [id, name, price] of [['n1', 'bread', '250'], ['n2', 'milk', '120'], ['n3', 'honey', '640']])
    check(rows.some(r => r.includes(id) && r.includes(name) && r.includes(price)),
      `the preview lacks ${id}: ${JSON.stringify(rows)}`);
  check((await page.$$('ul#import-errors li')).length === 0,
    `a good file shows errors: ${await textOf(page, 'ul#import-errors')}`);
  check(sql(a.db, "SELECT count(*) FROM products WHERE id LIKE 'n%'") === '0', 'the preview wrote rows');
  await waitFor('import enabled after a clean preview', async () => !(await disabled(page, 'button#import-run')));
  await shot(page, 'io-preview');
  await page.click('button#import-run');
  await waitFor('#import-result saying 3 rows were imported', async () =>
    /^Imported 3 rows\b/.test((await textOf(page, '#import-result')) || ''));
  check(sql(a.db, "SELECT count(*) FROM products WHERE id IN ('n1','n2','n3')") === '3', 'till-a lacks the imported rows');
  await shot(page, 'io-imported');
  await waitFor('the imported rows on till-b', () =>
    sql(b.db, "SELECT group_concat(id || '=' || price, ',') FROM (SELECT * FROM products WHERE id LIKE 'n%' ORDER BY id)") ===
      'n1=250,n2=120,n3=640', CONNECT_MS);

  // A bad value on line 3: listed with line and column, import stays disabled, nothing written.
  const bad = path.join(W, 'bad-products.csv');
  fs.writeFileSync(bad, 'id,name,price\nx1,salt,90\nx2,sugar,lots\n');
  await preview(page, bad);
  const errs = await waitFor('the bad value listed in ul#import-errors', async () => {
    const li = await page.$$eval('ul#import-errors li', l => l.map(x => x.textContent.trim()));
    return li.length > 0 && li;
  });
  check(errs.length === 1 && /line 3, column price\b/.test(errs[0]),
    `the errors do not say "line 3, column price": ${JSON.stringify(errs)}`);
  check(await disabled(page, 'button#import-run'), 'import is enabled after a preview with errors');
  await shot(page, 'io-bad-file');
  check(sql(a.db, "SELECT count(*) FROM products WHERE id IN ('x1','x2')") === '0', 'the bad file wrote rows');

  // Export: the link follows the selects.
  await waitFor('products among the export tables', () =>
    page.$$eval('select#export-table option', os => os.some(o => o.value === 'products')));
  await page.select('select#export-table', 'products');
  await page.select('select#export-format', 'json');
  const href = await waitFor('a#export-link for products as json', () => page.$eval('a#export-link',
    el => el.getAttribute('href')).then(h => /\/api\/export\?table=products&format=json$/.test(h) && h));
  const exp = await api(a, href.replace(/^https?:\/\/[^/]+/, ''));
  check(exp.status === 200 && exp.body.includes('"honey"'), `the export link's answer: ${exp.status} ${exp.body.slice(0, 200)}`);
}

async function flowBackups(a) {
  const page = a.page;
  await goPage(page, 'backups');
  const help = await textOf(page, '#restore-help');
  check(help && help.includes('tillsync restore'), `#restore-help does not say how to restore: ${help}`);
  // till-a runs with --backup-dir but no --backup-every: the page says there is no schedule.
  await waitFor('#backup-schedule saying there is no schedule', async () =>
    /^No schedule/.test((await textOf(page, '#backup-schedule')) || ''));
  await waitFor('#backup-now enabled', async () => !(await disabled(page, '#backup-now')));
  await page.click('#backup-now');
  const file = await waitFor('a backup listed in #backups', () =>
    page.$eval('#backups tr[data-file]', tr => tr.getAttribute('data-file')).catch(() => null), 60000);
  const row = `#backups tr[data-file="${file}"]`;
  const href = await page.$eval(`${row} a[data-action="download"]`, el => el.getAttribute('href')).catch(() => null);
  check(href === '/api/backups/download?file=' + encodeURIComponent(file) || href === '/api/backups/download?file=' + file,
    `the download link of ${file} is ${href}`);
  const verified = page.waitForResponse(r => r.request().method() === 'POST' &&
    r.url().endsWith('/api/backups/verify'), { timeout: 60000 });
  await page.click(`${row} button[data-action="verify"]`);
  const vr = await verified;
  const vj = await vr.json().catch(() => null);
  check(vr.status() === 200 && vj && vj.file === file && vj.ok === true, `verify answered ${vr.status()}: ${JSON.stringify(vj)}`);
  await waitFor(`the verified cell of ${file} to say it verified`, async () => {
    const cells = await page.$$eval(`${row} td`, tds => tds.map(td => td.textContent.trim()));
    if (!(cells.length >= 4 && /\b(yes|ok|verified)\b/i.test(cells[3]) && !/\b(no|not|fail\w*|cannot)\b/i.test(cells[3])))
      throw new Error(JSON.stringify(cells));
    return true;
  });
  await shot(page, 'backups');
  const dl = await api(a, href);
  check(dl.status === 200 && /application\/octet-stream/.test(dl.headers.get('content-type') || '') &&
    (dl.headers.get('content-disposition') || '') === `attachment; filename="${file}"` && dl.body.length > 0,
  `the download link answered ${dl.status} ${dl.headers.get('content-type')} ${dl.headers.get('content-disposition')}`);
}

async function flowSchema(a) {
  const page = a.page;
  await goPage(page, 'schema');
  const sel = 'table.schema-table[data-table="products"]';
  const rows = await waitFor(sel + ' with its columns', async () => {
    const r = await rowsOf(page, sel);
    return r.length > 0 && r;
  });
  const col = n => rows.find(r => r[0] === n);
  check(rows.length === 3 && col('id') && col('name') && col('price'),
    `the products schema table does not list id, name, price: ${JSON.stringify(rows)}`);
  check(col('id').some(c => /^key\b/.test(c)), `id is not shown as the key: ${JSON.stringify(col('id'))}`);
  for (const n of ['name', 'price'])
    check(col(n).includes('lww'), `${n} does not show its policy lww: ${JSON.stringify(col(n))}`);
  const mig = await waitFor('ul#migrations listing 001_notes.sql', async () => {
    const li = await page.$$eval('ul#migrations li', l => l.map(x => x.textContent.trim()));
    if (!(li.length === 1 && /\b001_notes\b/.test(li[0]))) throw new Error(JSON.stringify(li));
    return li;
  });
  check(mig, 'no migration listed');
  await shot(page, 'schema');
}

async function flowReadme(a, b) {
  await goPage(a.page, 'overview').catch(() => a.page.evaluate(() => { location.hash = ''; }));
  await overviewShows(a, b);
  await shot(a.page, 'overview-till-a-final');
  if (README_SHOT) {
    await a.page.setViewport({ width: 1100, height: 520 });
    await a.page.screenshot({ path: README_SHOT });
    console.log('screenshot: ' + README_SHOT);
    await a.page.setViewport({ width: 1280, height: 860 });
  }
}

// ---------------------------------------------------------------- main
async function flow(name, fn, pages) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok: ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    fail(`${name}: ${e.message}`);
    for (const p of pages.filter(Boolean))
      await shot(p, `fail-${name}-${pages.indexOf(p)}`).catch(() => {});
  }
}

async function stopNodes() {
  for (const c of nodes) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(nodes.map(c => c.exitCode !== null ? null :
    new Promise(r => { c.on('exit', r); setTimeout(() => { c.kill('SIGKILL'); r(); }, 10000); })));
}

async function main() {
  let tills;
  try {
    tills = await setupTills();
  } catch (e) {
    fail('setup: ' + e.message);
    return;
  }
  const { a, b } = tills;
  console.log(`till-a console ${a.base}/, till-b console ${b.base}/ (folder ${W})`);
  const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
  const launch = ['--disable-gpu', '--disable-dev-shm-usage'];
  if (process.getuid && process.getuid() === 0) launch.push('--no-sandbox');
  browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: launch });
  const pages = () => [a.page, b.page];
  await flow('overview', () => flowOverview(a, b), pages());
  if (!a.page || !b.page) return;
  await flow('pages', () => flowPages(a), pages());
  await flow('conflicts', () => flowConflicts(a, b), pages());
  await flow('io', () => flowIo(a, b), pages());
  await flow('backups', () => flowBackups(a), pages());
  await flow('schema', () => flowSchema(a), pages());
  await flow('final-overview', () => flowReadme(a, b), pages());
  for (const t of [a, b])
    if (t.page.errors.length) fail(`${t.name}'s page threw: ${t.page.errors.join(' / ')}`);
}

process.on('SIGTERM', () => { stopNodes().then(() => process.exit(1)); });
process.on('SIGINT', () => { stopNodes().then(() => process.exit(1)); });
main()
  .catch(e => fail('unexpected: ' + (e.stack || e.message)))
  .finally(async () => {
    if (browser) await browser.close().catch(() => {});
    await stopNodes();
    if (failures && !process.env.KEEP) console.log(`(KEEP=1 keeps ${W} with the nodes' logs)`);
    if (!process.env.KEEP) fs.rmSync(W, { recursive: true, force: true });
    console.log(`${checks} checks, ${failures} failed`);
    process.exit(failures ? 1 : 0);
  });
