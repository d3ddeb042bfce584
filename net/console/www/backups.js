// The backups page: the node's backups (GET /api/backups: file, size, when, verified), "back up
// now" with its progress (POST /api/backups, then the list's job until it ends), verify one file
// again (POST /api/backups/verify, the result in its row) and download it
// (GET /api/backups/download?file=NAME). How to restore is static text in index.html.
'use strict';

(function () {
  let polling = false;

  function size(bytes) {
    if (bytes < 1024) return bytes + ' B';
    if (bytes < 1048576) return (bytes / 1024).toFixed(1) + ' KiB';
    return (bytes / 1048576).toFixed(1) + ' MiB';
  }

  function verified(f) {
    if (f.verified === null) return 'encrypted (needs its passphrase)';
    return f.verified ? 'yes' : 'NO: ' + (f.problem || 'does not verify');
  }

  async function verify(tr, file) {
    const td = tr.querySelector('td.verified');
    text(td, 'checking…');
    td.className = 'verified';
    try {
      const j = await api('/api/backups/verify', { method: 'POST', json: { file } });
      text(td, j.ok ? 'yes (checked just now)' : 'NO: ' + (j.error || 'does not verify'));
      td.classList.add(j.ok ? 'good' : 'bad');
    } catch (e) {
      text(td, 'cannot check: ' + e.message);
      td.classList.add('bad');
    }
  }

  function row(f) {
    const tr = el('tr', { 'data-file': f.file });
    cell(tr, f.file, 'file');
    cell(tr, size(f.bytes));
    cell(tr, ago(f.modified_ms)).title = when(f.modified_ms);
    cell(tr, verified(f), 'verified ' + (f.verified === false ? 'bad' : f.verified ? 'good' : ''));
    cell(tr, '', 'actions').append(
      el('button', { type: 'button', 'data-action': 'verify', text: 'Verify', onclick: () => verify(tr, f.file) }),
      el('a', { class: 'button', 'data-action': 'download', text: 'Download',
        href: '/api/backups/download?file=' + encodeURIComponent(f.file) }));
    return tr;
  }

  async function load() {
    let b;
    try {
      b = await api('/api/backups');
    } catch (e) {
      errorLine($('backups-error'), e.message);
      return;
    }
    $('backups').querySelector('tbody').replaceChildren(...b.backups.map(row));
    $('no-backups').hidden = b.backups.length > 0;
    text($('no-backups'), b.dir ? 'No backup yet.' : 'This node keeps no backups (start it with --backup-dir).');
    const running = b.job && b.job.state === 'running';
    $('backup-now').disabled = !b.dir || running;
    if (b.job) {
      text($('backup-job'), 'backup ' + b.job.id + ': ' + b.job.state +
        (b.job.phase && running ? ' (' + b.job.phase + ')' : '') +
        (running && b.job.total ? ' ' + Math.round(100 * b.job.done / b.job.total) + '%' : '') +
        (b.job.error ? ' — ' + b.job.error : ''));
    }
    if (running && !polling) {
      polling = true;
      setTimeout(() => { polling = false; load(); }, 500);
    }
  }

  async function backupNow() {
    $('backup-now').disabled = true;
    errorLine($('backups-error'), '');
    try {
      await api('/api/backups', { method: 'POST', json: {} });
    } catch (e) {
      errorLine($('backups-error'), e.message);
    }
    load();
  }

  function init() { $('backup-now').addEventListener('click', backupNow); }

  function fresh() {
    errorLine($('backups-error'), '');
    load();
  }

  function duration(ms) {
    const h = ms / 3600000;
    if (h >= 24 && h % 24 === 0) return h / 24 + ' day' + (h === 24 ? '' : 's');
    if (h >= 1) return +h.toFixed(1) + ' h';
    return Math.round(ms / 60000) + ' min';
  }

  // The schedule, from the node's status ("backups": dir, every_ms, done, failed, last_ms).
  function onStatus(st) {
    const b = st.backups;
    text($('backup-schedule'), !b ? 'No schedule: the node backs up only when asked ' +
      '(tillsync run … --backup-every 1d --backup-dir DIR schedules it).'
      : 'Every ' + duration(b.every_ms) + ' into ' + b.dir + '; ' +
        (b.last_ms ? 'last ' + ago(b.last_ms) : 'none yet') + ', ' + b.done + ' made' +
        (b.failed ? ', ' + b.failed + ' FAILED (see the node\'s log)' : '') + '.');
    $('backup-schedule').classList.toggle('bad', !!(b && b.failed));
  }

  tsync.pages.backups = { init, show: fresh, onStatus };
})();
