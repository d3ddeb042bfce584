// The console's shared part: the session (the page is opened through /?token=..., which set the
// session cookie; a POST also sends the session's CSRF token from GET /api/session), api() (fetch
// that turns a failure into its one-line reason), the page switch (location.hash names the page),
// and the overview: the node's status live from /api/events (server-sent events), drawn into the
// header's indicator on every page. The other pages are conflicts.js, backups.js, io.js and
// schema.js; each registers itself in tsync.pages with a show() called when its page is opened
// (and may have init(), once the session is known, and onStatus(st), on every status event).
// Data is only ever written with textContent, never as HTML.
'use strict';

const tsync = { pages: {}, csrf: null, status: null };

function $(id) { return document.getElementById(id); }

function text(el, s) { el.textContent = s === undefined || s === null ? '' : String(s); }

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'text') text(e, v);
    else if (k === 'class') e.className = v;
    else if (k.startsWith('data-') || k === 'type' || k === 'href' || k === 'title' || k === 'placeholder' || k.startsWith('aria-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...kids);
  return e;
}

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return new Date(ms).toLocaleString();
}

// A moment: its time of day when it is today, else date and time.
function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function cell(tr, value, cls) {
  const td = document.createElement('td');
  text(td, value);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

// Shows msg in the error line el (hides it when msg is empty).
function errorLine(el, msg) {
  text(el, msg || '');
  el.hidden = !msg;
}

// A POST of a file with its progress: fetch() reports none while sending, XMLHttpRequest does.
// Resolves to what api() reads of a fetch answer (ok, status, statusText, json()).
function upload(path, init, onUpload) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(init.method, path);
    for (const [k, v] of Object.entries(init.headers)) x.setRequestHeader(k, v);
    x.upload.onprogress = e => { if (e.lengthComputable) onUpload(e.loaded, e.total); };
    x.upload.onload = () => onUpload(-1, -1);
    x.onerror = () => reject(new Error('network'));
    x.onload = () => resolve({
      ok: x.status >= 200 && x.status < 300, status: x.status, statusText: x.statusText,
      json: async () => JSON.parse(x.responseText),
    });
    x.send(init.body);
  });
}

// fetch for the API: JSON in and out, the CSRF token on a POST. Resolves to the answer's JSON;
// rejects with an Error whose message is the server's one-line reason ({"error": "..."}).
async function api(path, opts) {
  opts = opts || {};
  const init = { method: opts.method || 'GET', headers: {} };
  if (init.method !== 'GET') init.headers['X-CSRF-Token'] = tsync.csrf || '';
  if (opts.json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.json);
  } else if (opts.body !== undefined) {
    init.headers['Content-Type'] = 'application/octet-stream';
    init.body = opts.body;
  }
  let r;
  try {
    r = opts.onUpload ? await upload(path, init, opts.onUpload) : await fetch(path, init);
  } catch (e) {
    throw new Error('the console is not reachable (is the node running?)');
  }
  let j = null;
  try { j = await r.json(); } catch (e) { j = null; }
  if (!r.ok && !(opts.okStatus && opts.okStatus.includes(r.status))) {
    const err = new Error(j && j.error ? j.error : 'HTTP ' + r.status + ' ' + r.statusText);
    err.status = r.status;
    err.body = j;
    throw err;
  }
  return j;
}

// A stored value as a person reads it.
function show(v) {
  if (v === null || v === undefined) return '(empty)';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// ---------------------------------------------------------------- overview and indicator

// The indicator: the node's "sync" object when it has one, else what "online" and "state" say.
function indicator(st) {
  let state, reason = '';
  if (st.sync && st.sync.state) {
    state = st.sync.state;
    reason = st.sync.reason || '';
  } else if (st.state === 'attention') {
    state = 'attention';
  } else {
    const known = (st.peers || []).filter(p => p.state !== 'gone').length;
    state = known === 0 ? 'alone' : st.online ? 'ok' : 'offline';
  }
  $('indicator').className = 'indicator ' + state;
  text($('state'), state);
  text($('reason'), reason);
}

function render(st) {
  tsync.status = st;
  text($('database'), st.database);
  text($('restore-db'), st.database || 'DB');
  indicator(st);
  const body = $('tills').querySelector('tbody');
  body.replaceChildren();
  const peers = (st.peers || []).filter(p => p.state !== 'gone');
  for (const p of peers) {
    const tr = document.createElement('tr');
    cell(tr, p.name || (p.key ? p.key.slice(0, 16) + '…' : '(not enrolled: key not known)'));
    cell(tr, p.address);
    cell(tr, p.state + (p.refused_reason ? ': ' + p.refused_reason : '') +
      (p.reason ? ' (' + p.reason + ')' : ''), 'state-' + p.state);
    cell(tr, ago(p.since_ms));
    cell(tr, p.they_lack);
    cell(tr, p.we_lack);
    body.appendChild(tr);
  }
  $('no-tills').hidden = peers.length > 0;
  const q = $('queue');
  q.replaceChildren();
  if (st.sync) {
    // The last moment every connected till was current (the indicator's last_synced_at).
    const at = st.sync.last_synced_at_ms;
    const dd = el('dd', { text: at ? ago(at) : 'not yet' });
    if (at) dd.title = when(at);
    q.append(el('dt', { text: 'Last synced' }), dd);
  }
  if (st.relay && st.relay.state) {
    // The shop's relay (docs/RELAY.md, "The till's side"): its state, and the lag both ways.
    const r = st.relay;
    let t = r.state + (r.address && r.state !== 'none' ? ' ' + r.address : '');
    if (r.state !== 'up' && r.reason) t += ' (' + r.reason + ')';
    if (Number.isInteger(r.relay_lacks))
      t += ' · relay lacks ' + r.relay_lacks + ', this till lacks ' + r.till_lacks;
    const dd = el('dd', { text: t });
    if (r.last_exchange_ms) dd.title = 'last exchange ' + when(r.last_exchange_ms);
    q.append(el('dt', { text: 'Relay' }), dd);
  }
  for (const [k, label] of [['pending_out', 'Waiting to be sent'], ['unsealed', 'Not yet sealed'],
    ['held', 'Held (waiting for earlier changes)'], ['parked', 'Parked (unknown table or column)'],
    ['conflicts', 'Conflicts recorded'], ['conflicts_open', 'Conflicts open']]) {
    if (k === 'conflicts_open' && st[k] === undefined) continue;
    q.append(el('dt', { text: label }), el('dd', { text: st[k] === undefined ? '—' : st[k] }));
  }
  const hr = $('held-reasons');
  hr.replaceChildren();
  for (const h of st.held_reasons || []) hr.appendChild(el('li', { text: h.count + ' held: ' + h.reason }));
  const open = st.conflicts_open;
  const badge = $('conflicts-badge');
  text(badge, open);
  badge.hidden = !open;
  text($('updated'), 'updated ' + new Date(st.updated_ms || Date.now()).toLocaleTimeString());
  for (const p of Object.values(tsync.pages)) if (p.onStatus) p.onStatus(st);
}

// ---------------------------------------------------------------- page switch

const PAGES = ['overview', 'conflicts', 'backups', 'io', 'schema'];

function route() {
  const want = location.hash.replace(/^#/, '');
  const name = PAGES.includes(want) ? want : 'overview';
  for (const p of PAGES) $('page-' + p).hidden = p !== name;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#' + name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const page = tsync.pages[name];
  if (page && tsync.csrf !== null) page.show();
}

async function main() {
  window.addEventListener('hashchange', route);
  route();
  const s = await fetch('/api/session');
  if (s.status === 401) {
    text($('state'), 'open this page with the address `tillsync status` shows (…/?token=…)');
    return;
  }
  tsync.csrf = (await s.json()).csrf || '';
  for (const p of Object.values(tsync.pages)) if (p.init) p.init();
  const ev = new EventSource('/api/events');
  ev.addEventListener('status', e => render(JSON.parse(e.data)));
  ev.onerror = () => { $('indicator').className = 'indicator unknown'; text($('state'), 'console unreachable'); };
  route();
}

document.addEventListener('DOMContentLoaded', main);
