// The schema page (GET /api/schema): one table per replicated table with its columns, their
// declared type, whether they are part of the key, and how concurrent writes merge (lww, max, min,
// review, counter); then the migrations applied to this database.
'use strict';

(function () {
  function policy(c) {
    if (c.key) return '';
    if (c.policy) return c.policy;
    return c.counter ? 'counter' : 'lww';
  }

  function table(t) {
    const tbl = el('table', { class: 'schema-table', 'data-table': t.name });
    tbl.append(el('caption', { text: t.name }),
      el('thead', {}, el('tr', {}, el('th', { text: 'Column' }), el('th', { text: 'Type' }),
        el('th', { text: 'Key' }), el('th', { text: 'Merge policy' }))));
    const body = el('tbody');
    for (const c of t.columns || []) {
      const tr = el('tr');
      cell(tr, c.name);
      cell(tr, c.type || '(none)', c.type ? '' : 'quiet');
      cell(tr, c.key ? 'key' + ((t.columns.filter(x => x.key).length > 1) ? ' ' + c.key : '') : '');
      cell(tr, policy(c), 'policy');
      body.appendChild(tr);
    }
    tbl.appendChild(body);
    return tbl;
  }

  async function load() {
    let j;
    try {
      j = await api('/api/schema');
    } catch (e) {
      errorLine($('schema-error'), e.message);
      return;
    }
    errorLine($('schema-error'), '');
    const tables = j.tables || [];
    $('schema-tables').replaceChildren(...tables.map(table));
    $('no-tables').hidden = tables.length > 0;
    const applied = (j.migrations && j.migrations.applied) || [];
    $('migrations').replaceChildren(...(applied.length
      ? applied.map(m => el('li', {},
        el('strong', { text: m.number + ' ' + m.name }),
        el('span', { class: 'quiet', text: ' — applied ' + when(m.applied_ms) })))
      : [el('li', { class: 'quiet', text: 'No migration applied.' })]));
  }

  tsync.pages.schema = { show: load };
})();
