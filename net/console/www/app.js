// The console's overview: the node's status, live from /api/events (server-sent events), and
// its backups. The page is opened through /?token=..., which set the session cookie; a POST also
// sends the session's CSRF token (GET /api/session).
'use strict';

let csrf = null;

function $(id) { return document.getElementById(id); }

function text(el, s) { el.textContent = s === undefined || s === null ? '' : String(s); }

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return new Date(ms).toLocaleString();
}

function cell(tr, value, cls) {
  const td = document.createElement('td');
  text(td, value);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

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
  text($('database'), st.database);
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
  for (const [k, label] of [['pending_out', 'Waiting to be sent'], ['unsealed', 'Not yet sealed'],
    ['held', 'Held (waiting for earlier changes)'], ['parked', 'Parked (unknown table or column)'],
    ['conflicts', 'Conflicts recorded']]) {
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    text(dt, label);
    text(dd, st[k] === undefined ? '—' : st[k]);
    q.append(dt, dd);
  }
  const hr = $('held-reasons');
  hr.replaceChildren();
  for (const h of st.held_reasons || []) {
    const li = document.createElement('li');
    text(li, h.count + ' held: ' + h.reason);
    hr.appendChild(li);
  }
  text($('updated'), 'updated ' + new Date(st.updated_ms || Date.now()).toLocaleTimeString());
}

async function backups() {
  const r = await fetch('/api/backups');
  if (!r.ok) return;
  const b = await r.json();
  const body = $('backups').querySelector('tbody');
  body.replaceChildren();
  for (const f of b.backups) {
    const tr = document.createElement('tr');
    cell(tr, f.file);
    cell(tr, (f.bytes / 1048576).toFixed(1) + ' MiB');
    cell(tr, ago(f.modified_ms));
    cell(tr, f.verified === null ? 'encrypted' : f.verified ? 'yes' : 'NO: ' + f.problem);
    body.appendChild(tr);
  }
  $('no-backups').hidden = b.backups.length > 0;
  text($('no-backups'), b.dir ? 'No backup yet.' : 'This node keeps no backups (--backup-dir).');
  $('backup-now').disabled = !b.dir || (b.job && b.job.state === 'running');
  if (b.job) {
    text($('backup-job'), 'backup ' + b.job.id + ': ' + b.job.state +
      (b.job.state === 'running' && b.job.total ? ' ' + Math.round(100 * b.job.done / b.job.total) + '%' : '') +
      (b.job.error ? ' — ' + b.job.error : ''));
    if (b.job.state === 'running') setTimeout(backups, 500);
  }
}

async function backupNow() {
  const r = await fetch('/api/backups', {
    method: 'POST', headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' }, body: '{}'
  });
  const j = await r.json();
  if (!r.ok) text($('backup-job'), j.error);
  backups();
}

async function main() {
  const s = await fetch('/api/session');
  if (s.status === 401) {
    text($('state'), 'open this page with the address `tillsync status` shows (…/?token=…)');
    return;
  }
  csrf = (await s.json()).csrf;
  $('backup-now').addEventListener('click', backupNow);
  const ev = new EventSource('/api/events');
  ev.addEventListener('status', e => render(JSON.parse(e.data)));
  ev.onerror = () => { $('indicator').className = 'indicator unknown'; text($('state'), 'console unreachable'); };
  backups();
}

main();
