// The import / export page. Import: a file for a replicated table is sent with dry_run=1 first
// (POST /api/import): the first good rows show in #import-rows and every bad value, with its line
// and column, in #import-errors; only a preview without a bad value enables "Import", which sends
// the same file for real (all or nothing). Export: #export-link points at
// /api/export?table=T&format=F for the chosen table and format. Tables come from /api/schema.
'use strict';

(function () {
  let tablesLoaded = false;

  function importUrl(dry) {
    return '/api/import?table=' + encodeURIComponent($('import-table').value) +
      '&format=' + encodeURIComponent($('import-format').value) + (dry ? '&dry_run=1' : '');
  }

  // Whatever was previewed no longer holds once the table, format or file changes.
  function reset() {
    $('import-run').disabled = true;
    errorLine($('import-error'), '');
    text($('import-summary'), '');
    text($('import-result'), '');
    $('import-errors').replaceChildren();
    $('import-rows').querySelector('thead').replaceChildren();
    $('import-rows').querySelector('tbody').replaceChildren();
  }

  function file() {
    const f = $('import-file').files[0];
    if (!f) errorLine($('import-error'), 'choose a file first');
    return f;
  }

  function badLine(b) {
    const where = b.line ? 'line ' + b.line + (b.column ? ', column ' + b.column : '') + ': ' : '';
    return where + b.reason;
  }

  function preview(j) {
    const rows = j.preview || [];
    const cols = [];
    for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
    const head = el('tr');
    for (const c of cols) head.appendChild(el('th', { text: c }));
    $('import-rows').querySelector('thead').replaceChildren(...(cols.length ? [head] : []));
    $('import-rows').querySelector('tbody').replaceChildren(...rows.map(r => {
      const tr = el('tr');
      for (const c of cols) cell(tr, r[c] === undefined ? '' : show(r[c]));
      return tr;
    }));
    const bad = j.bad || [];
    const items = bad.map(b => el('li', { text: badLine(b) }));
    if (j.bad_count > bad.length) items.push(el('li', { text: '… and ' + (j.bad_count - bad.length) + ' more' }));
    $('import-errors').replaceChildren(...items);
    text($('import-summary'), j.rows + ' row' + (j.rows === 1 ? '' : 's') + ' read, ' +
      (j.bad_count ? j.bad_count + ' bad value' + (j.bad_count === 1 ? '' : 's') + ': fix the file, nothing was written'
        : 'no bad value' + (rows.length ? '; the first ' + rows.length + ' below' : '')));
  }

  async function doPreview() {
    reset();
    const f = file();
    if (!f) return;
    $('import-preview').disabled = true;
    try {
      const j = await api(importUrl(true), { method: 'POST', body: f });
      preview(j);
      $('import-run').disabled = !(j.ok && !j.bad_count);
      if (!j.ok && !j.bad_count && j.error) errorLine($('import-error'), j.error);
    } catch (e) {
      errorLine($('import-error'), e.message);
    } finally {
      $('import-preview').disabled = false;
    }
  }

  async function doImport() {
    const f = file();
    if (!f) return;
    $('import-run').disabled = true;
    $('import-preview').disabled = true;
    text($('import-result'), 'Sending ' + f.name + '…');
    // Sending shows its percentage; then the node checks and writes the rows in one transaction.
    const progress = (sent, total) => text($('import-result'), sent < 0
      ? 'Importing ' + f.name + ': checking and writing the rows…'
      : 'Sending ' + f.name + ': ' + Math.floor(100 * sent / Math.max(total, 1)) + ' %');
    try {
      const j = await api(importUrl(false), { method: 'POST', body: f, onUpload: progress });
      text($('import-result'), 'Imported ' + j.imported + ' row' + (j.imported === 1 ? '' : 's') +
        ' into ' + j.table + '.');
    } catch (e) {
      text($('import-result'), '');
      errorLine($('import-error'), e.message);
      if (e.body && e.body.bad) preview(e.body);
    } finally {
      $('import-preview').disabled = false;
    }
  }

  function exportLink() {
    const t = $('export-table').value;
    $('export-link').href = '/api/export?table=' + encodeURIComponent(t) +
      '&format=' + encodeURIComponent($('export-format').value);
    $('export-link').classList.toggle('disabled', !t);
  }

  async function load() {
    if (tablesLoaded) return;
    let j;
    try {
      j = await api('/api/schema');
    } catch (e) {
      errorLine($('import-error'), 'cannot list the tables: ' + e.message);
      return;
    }
    tablesLoaded = true;
    for (const id of ['import-table', 'export-table']) {
      const sel = $(id);
      const keep = sel.value;
      sel.replaceChildren(...(j.tables || []).map(t => el('option', { value: t.name, text: t.name })));
      if (keep) sel.value = keep;
    }
    exportLink();
  }

  function init() {
    for (const id of ['import-table', 'import-format']) $(id).addEventListener('change', reset);
    $('import-file').addEventListener('change', () => {
      reset();
      const f = $('import-file').files[0];
      const ext = f && f.name.toLowerCase().match(/\.(csv|json|ndjson)$/);
      if (ext) $('import-format').value = ext[1];
    });
    $('import-preview').addEventListener('click', doPreview);
    $('import-run').addEventListener('click', doImport);
    $('export-table').addEventListener('change', exportLink);
    $('export-format').addEventListener('change', exportLink);
  }

  tsync.pages.io = { init, show: load };
})();
