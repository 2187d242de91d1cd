// The console page, built on the browser module like any other page would
// be. Everything user- or broker-supplied goes into the DOM as text, never
// as HTML.
import { Sluice } from '/sluice.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'sluice.token';
const MAX_ROWS = 1000;

// The token lives in sessionStorage only: gone with the tab, never in a URL
// the page shows or a cookie the browser would send elsewhere. Read on every
// renewal, so a token pasted later is used by the next request or reconnect.
const sluice = new Sluice('', { token: () => sessionStorage.getItem(TOKEN_KEY) });
let sub = null;

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function describe(err) {
  if (err.status === 401) return 'needs a token (401)';
  if (err.status === 403) return 'the token does not allow this (403)';
  return String(err.message || err);
}

function fmtTime(date) {
  return date ? date.toISOString().replace('T', ' ').replace('Z', '') : '';
}

async function refreshTopics() {
  try {
    const { topics } = await sluice.topics();
    const body = $('topics');
    body.replaceChildren();
    for (const t of topics) {
      const row = body.insertRow();
      row.dataset.topic = t.topic;
      cell(row, t.topic);
      cell(row, t.retained);
      cell(row, t.subscribers);
      row.addEventListener('click', () => { $('topic').value = t.topic; subscribe(); });
    }
    $('topics-error').textContent = '';
  } catch (err) {
    $('topics-error').textContent = describe(err);
  }
}

async function refreshConnections() {
  try {
    const { connections } = await sluice.connections();
    const body = $('conns');
    body.replaceChildren();
    for (const c of connections) {
      const row = body.insertRow();
      cell(row, c.id);
      cell(row, c.topic);
      cell(row, c.state, `state-${c.state}`);
      cell(row, `${c.queued_events} ev / ${c.queued_bytes} B`);
      cell(row, `${c.events_sent} ev / ${c.bytes_sent} B`);
      cell(row, `${c.last_write_ms_ago} ms ago`);
      cell(row, `${c.connected_secs} s`);
    }
    $('conns-error').textContent = '';
  } catch (err) {
    // Connections are for admin tokens: say so rather than show nothing.
    $('conns-error').textContent = describe(err);
  }
}

async function refreshInfo() {
  if (!sub) return;
  try {
    const i = await sluice.topic(sub.topic);
    $('info').textContent = `· ${i.retained} retained, ${i.subscribers} subscribers, latest ${i.latest_cursor || '-'}`;
    catchUp(i.latest_cursor);
  } catch (err) {
    $('info').textContent = `· ${describe(err)}`;
  }
}

function showState({ state, attempts, downSecs, lastId }) {
  const el = $('state');
  el.dataset.state = state;
  let text = state;
  if (state === 'reconnecting') text = `reconnecting (attempt ${attempts})`;
  if (state === 'connected' && attempts > 0) {
    text = `connected, resumed after ${downSecs.toFixed(1)} s and ${attempts} attempts`;
    if (lastId) text += ` from ${lastId}`;
  }
  el.textContent = text;
}

function addRow(build, cls) {
  const body = $('events');
  const row = body.insertRow();
  if (cls) row.className = cls;
  build(row);
  while (body.rows.length > MAX_ROWS) body.deleteRow(0);
  row.scrollIntoView({ block: 'nearest' });
}

// An EventSource hands the page only the event types it listens for. The
// module reads from history what the stream dropped once a later event
// shows the hole; the first page of history names the topic's types before
// subscribing, so that is rarely needed.
async function typesIn(topic, query) {
  try {
    const page = await sluice.history(topic, { ...query, limit: 1000 });
    return page.events.map((e) => e.type).filter(Boolean);
  } catch {
    return [];
  }
}

let behind = null;

// A dropped event with no event after it yet shows no hole: when the
// topic's latest event is not the last one shown for two polls in a row
// (once: maybe still on its way), the module reads history up to the end.
function catchUp(latest) {
  if (!sub || sub.state !== 'connected' || !latest || latest === sub.lastId) {
    behind = null;
    return;
  }
  if (behind !== latest) { behind = latest; return; }
  behind = null;
  sub.sync();
}

let generation = 0;

async function subscribe() {
  const topic = $('topic').value.trim();
  if (!topic) return;
  if (sub) sub.close();
  sub = null;
  const mine = ++generation;
  $('events').replaceChildren();
  $('notice').textContent = '';
  const cursor = $('cursor').value.trim() || null;
  const types = new Set($('types').value.split(',').map((s) => s.trim()).filter(Boolean));
  const start = cursor ? { cursor } : { from: 'earliest' };
  (await typesIn(topic, start)).forEach((t) => types.add(t));
  if (mine !== generation) return; // a later subscribe won
  $('types').value = [...types].join(',');
  sub = sluice.subscribe(topic, {
    from: $('from').value,
    cursor,
    types: [...types],
  });
  showState(sub);
  sub.addEventListener('state', (e) => showState(e.detail));
  const s = sub;
  sub.addEventListener('event', ({ detail: ev }) => {
    // The module listens for a type it met in history from then on.
    if (s === sub) $('types').value = [...s.types].join(',');
    addRow((row) => {
      row.dataset.id = ev.id;
      cell(row, ev.id);
      cell(row, ev.type === 'message' ? '' : ev.type);
      cell(row, fmtTime(ev.time));
      cell(row, ev.data);
    });
  });
  sub.addEventListener('gap', ({ detail: g }) => {
    const lost = g.lost == null ? 'an unknown number of' : g.lost;
    $('notice').textContent = `gap of ${lost} events: events after ${g.requested} are no longer stored, resumed after ${g.resumed_after}`;
    addRow((row) => {
      row.dataset.gap = g.lost == null ? '' : String(g.lost);
      const td = cell(row, `gap: ${lost} events lost, resumed after ${g.resumed_after}`);
      td.colSpan = 4;
    }, 'gap');
  });
  sub.addEventListener('auth-expired', ({ detail }) => {
    $('notice').textContent = `token expired at ${detail.expired_at}; renewed and resumed`;
  });
  const url = new URL(location.href);
  url.searchParams.set('topic', topic);
  history.replaceState(null, '', url);
  refreshInfo();
}

async function publish() {
  const topic = sub ? sub.topic : $('topic').value.trim();
  if (!topic) { $('pub-result').textContent = 'choose a topic first'; return; }
  const type = $('pub-type').value.trim();
  // Listen for the type before it is published, so the live view shows it.
  if (sub && type) sub.listen(type);
  const key = $('pub-key').value.trim();
  $('pub-result').textContent = 'publishing...';
  try {
    const r = await sluice.publish(topic, $('pub-data').value, {
      type: type || undefined,
      ...(key ? { key } : {}),
    });
    $('pub-result').textContent = `${r.replayed ? 'duplicate of' : 'stored as'} ${r.cursor}`;
    $('pub-result').dataset.cursor = r.cursor;
  } catch (err) {
    $('pub-result').textContent = `refused: ${describe(err)}`;
  }
}

function init() {
  $('token').value = sessionStorage.getItem(TOKEN_KEY) || '';
  $('token-state').textContent = $('token').value ? 'token set' : '';
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    sluice.current = null; // read again on the next request
    $('token-state').textContent = t ? 'token set' : 'no token';
    refreshTopics();
    refreshConnections();
    if (sub) subscribe();
  });
  $('sub-form').addEventListener('submit', (e) => { e.preventDefault(); subscribe(); });
  $('pub-form').addEventListener('submit', (e) => { e.preventDefault(); publish(); });
  // A link may name the view: ?topic=orders&from=earliest&cursor=...&types=a,b
  const q = new URLSearchParams(location.search);
  for (const k of ['topic', 'from', 'cursor', 'types']) if (q.get(k)) $(k).value = q.get(k);
  if (q.get('topic')) subscribe();
  const refresh = () => { refreshTopics(); refreshConnections(); refreshInfo(); };
  refresh();
  setInterval(refresh, 2000);
}

init();
