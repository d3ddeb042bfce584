// The conflicts page: the journal of values two tills wrote while apart (GET /api/conflicts), both
// values side by side with till names and times. An open one is resolved here: keep the value that
// won, take the overwritten one, or enter a value (POST /api/conflicts/{id}/resolve); selected
// ones, or all, are dismissed (POST /api/conflicts/dismiss). After each action the list reloads;
// a failure shows its one-line reason in #conflicts-error. While shown, the list also follows
// what other tills do (a conflict resolved there shows resolved here within a few seconds).
'use strict';

(function () {
  // One side of a conflict: the value, then which till wrote it and when.
  function side(tr, s) {
    const td = cell(tr, '');
    if (!s) return;
    td.append(el('div', { class: 'value', text: show(s.value) }),
      el('div', { class: 'quiet small', text: (s.till || s.site || '?') + ' · ' + when(s.time_ms) }));
  }

  function key(k) {
    return Array.isArray(k) ? k.map(show).join(', ') : show(k);
  }

  async function act(path, body) {
    errorLine($('conflicts-error'), '');
    try {
      await api(path, { method: 'POST', json: body });
    } catch (e) {
      errorLine($('conflicts-error'), e.message);
    }
    load();
  }

  function row(c) {
    const tr = el('tr', { 'data-id': c.id, class: c.open ? 'open' : 'resolved' });
    const sel = cell(tr, '');
    sel.append(el('input', { type: 'checkbox', class: 'select', 'aria-label': 'select conflict ' + c.id }));
    cell(tr, c.table);
    cell(tr, key(c.key));
    cell(tr, c.column + (c.kind === 'review' ? ' (review)' : ''));
    side(tr, c.winner);
    side(tr, c.loser);
    const r = c.resolved;
    const state = cell(tr, c.open ? 'open' : 'resolved: ' + (r ? r.how + ' by ' + (r.till || r.site || '?') : '?'),
      c.open ? 'state-open' : 'state-resolved');
    if (r) {
      state.title = (r.how === 'take' || r.how === 'value' ? 'now ' + show(r.value) + ', ' : '') +
        'at ' + when(r.at_ms);
    }
    const acts = cell(tr, '', 'actions');
    if (c.open) {
      const input = el('input', { type: 'text', class: 'value-input', placeholder: 'new value',
        'aria-label': 'value for conflict ' + c.id });
      const base = '/api/conflicts/' + encodeURIComponent(c.id) + '/resolve';
      acts.append(
        el('button', { type: 'button', 'data-action': 'keep', text: 'Keep',
          title: 'keep the value that won', onclick: () => act(base, { keep: true }) }),
        el('button', { type: 'button', 'data-action': 'take-other', text: 'Take other',
          title: 'take the overwritten value', onclick: () => act(base, { take: 'other' }) }),
        input,
        el('button', { type: 'button', 'data-action': 'value', text: 'Set',
          title: 'write the value entered', onclick: () => act(base, { value: input.value }) }));
    }
    return tr;
  }

  let shown = null; // the list as last drawn (JSON), so an unchanged one is not redrawn

  async function load() {
    const only = $('conflicts-open-only').checked;
    let list;
    try {
      const j = await api('/api/conflicts' + (only ? '?open=1' : ''));
      // An array of entries, or an object holding one (the contract's shape).
      list = Array.isArray(j) ? j : (j && (j.conflicts || j.entries)) || [];
    } catch (e) {
      errorLine($('conflicts-error'), e.message);
      return;
    }
    if (only) list = list.filter(c => c.open);
    const now = only + JSON.stringify(list);
    if (now === shown) return;
    shown = now;
    // Redrawn: what a person typed or ticked in a row that is still there stays.
    const body = $('conflicts').querySelector('tbody');
    const typed = {}, ticked = new Set();
    for (const tr of body.rows) {
      const v = tr.querySelector('input.value-input');
      if (v && v.value) typed[tr.dataset.id] = v.value;
      if (tr.querySelector('input.select:checked')) ticked.add(tr.dataset.id);
    }
    body.replaceChildren(...list.map(row));
    for (const tr of body.rows) {
      const v = tr.querySelector('input.value-input');
      if (v && typed[tr.dataset.id]) v.value = typed[tr.dataset.id];
      tr.querySelector('input.select').checked = ticked.has(tr.dataset.id);
    }
    $('no-conflicts').hidden = list.length > 0;
    text($('no-conflicts'), only ? 'No open conflicts.' : 'No conflicts recorded.');
    $('dismiss-selected').disabled = $('dismiss-all').disabled = list.length === 0;
  }

  function fresh() {
    errorLine($('conflicts-error'), '');
    load();
  }

  function init() {
    $('conflicts-open-only').addEventListener('change', fresh);
    $('dismiss-selected').addEventListener('click', () => {
      const ids = [...document.querySelectorAll('#conflicts tbody input.select:checked')]
        .map(i => Number(i.closest('tr').dataset.id));
      if (ids.length === 0) {
        errorLine($('conflicts-error'), 'select the conflicts to dismiss first');
        return;
      }
      act('/api/conflicts/dismiss', { ids });
    });
    $('dismiss-all').addEventListener('click', () => {
      if (confirm('Dismiss every conflict? The values stay as they are.')) act('/api/conflicts/dismiss', { all: true });
    });
  }

  // A conflict resolved or dismissed on another till changes no count in the node's status: while
  // the page is on screen, the list is asked for again every few seconds (redrawn only if it
  // changed), and at once when a new conflict is counted.
  const POLL_MS = 5000;
  let seen = null;
  function onStatus(st) {
    const now = String(st.conflicts);
    if (seen !== null && now !== seen && visible()) load();
    seen = now;
  }
  function visible() { return !$('page-conflicts').hidden && !document.hidden; }
  setInterval(() => { if (tsync.csrf !== null && visible()) load(); }, POLL_MS);

  tsync.pages.conflicts = { init, show: fresh, onStatus };
})();
