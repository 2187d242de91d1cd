// sluice.js: a browser client for Sluice, one ES module with no dependency.
// Served by every broker at /sluice.js; it can also be copied next to a page.
//
//   import { Sluice } from '/sluice.js';
//   const sluice = new Sluice('', { token: () => fetchMyToken() });
//   const sub = sluice.subscribe('orders', { from: 'earliest' });
//   sub.addEventListener('event', (e) => console.log(e.detail.id, e.detail.data));
//   sub.addEventListener('gap', (e) => console.warn('lost', e.detail.lost));
//   await sluice.publish('orders', '{"id":1}');

/** The reconnect schedule of the Rust client: 1 s doubling to 30 s, ±15 %. */
export function backoff(attempt, baseMs = 1000, capMs = 30000) {
  const ms = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
  return ms * (0.85 + Math.random() * 0.3);
}

/** The event's UTC time, read from the start of its cursor (API.md, "Cursors"). */
export function cursorTime(cursor) {
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)\.(\d{3})Z/.exec(cursor || '');
  return m ? new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`) : null;
}

/**
 * The position in a cursor: `{seq, epoch}` (seq a BigInt), or null. The
 * layout (`<time>-<seq, 16 hex>-<epoch>`) is this broker's, and this module
 * ships with it, so it may read it; any other client must treat cursors as
 * opaque (API.md, "Cursors").
 */
export function cursorPosition(cursor) {
  const m = /-([0-9a-f]{16})-([a-z0-9]{1,16})$/.exec(cursor || '');
  return m ? { seq: BigInt(`0x${m[1]}`), epoch: m[2] } : null;
}

/** A fresh idempotency key. Not crypto.randomUUID: that needs a secure
 * context, and a console on a LAN address over http is not one. */
export function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** An HTTP answer that is not a success, with its problem+json body. */
export class SluiceError extends Error {
  constructor(status, problem) {
    super(`${status} ${problem.title || ''}: ${problem.detail || ''}`.trim());
    this.status = status;
    this.problem = problem;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * One broker. `base` is its URL ('' for the page's own origin). `token` is a
 * string, or a function (maybe async) called for a fresh token whenever one
 * is refused or a stream's token expires. `withCredentials` sends cookies
 * (a token cookie, `auth.cookie_name`) to another origin.
 */
export class Sluice {
  constructor(base = '', { token = null, withCredentials = false } = {}) {
    this.base = base.replace(/\/$/, '');
    this.provider = typeof token === 'function' ? token : null;
    this.current = typeof token === 'function' ? null : token;
    this.withCredentials = withCredentials;
  }

  /** The token in force; `renew` asks the provider for a new one. */
  async token(renew = false) {
    if (this.provider && (renew || this.current == null)) this.current = await this.provider();
    return this.current || null;
  }

  /** fetch with the bearer token; a 401 renews the token once. */
  async request(path, init = {}) {
    for (let renewed = false; ; renewed = true) {
      const headers = new Headers(init.headers || {});
      const token = await this.token(renewed);
      if (token) headers.set('Authorization', `Bearer ${token}`);
      const res = await fetch(this.base + path, {
        ...init,
        headers,
        credentials: this.withCredentials ? 'include' : 'same-origin',
      });
      if (res.status === 401 && this.provider && !renewed) continue;
      return res;
    }
  }

  async json(path, init) {
    const res = await this.request(path, init);
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new SluiceError(res.status, body);
    return body;
  }

  topics() { return this.json('/v1/topics'); }
  topic(t) { return this.json(`/v1/topics/${encodeURIComponent(t)}`); }
  connections() { return this.json('/v1/connections'); }

  /** One page of history: `{events, next_cursor}`. */
  history(t, { cursor, from, limit } = {}) {
    const q = new URLSearchParams();
    if (cursor) q.set('cursor', cursor); else if (from) q.set('from', from);
    if (limit) q.set('limit', limit);
    return this.json(`/v1/topics/${encodeURIComponent(t)}/events?${q}`, {
      headers: { Accept: 'application/json' },
    });
  }

  /**
   * Publishes one event and returns `{cursor, duplicate, replayed, key}`.
   * Every publish carries an Idempotency-Key (given, or made here), so the
   * retries of a lost answer, a 429 or a 503 can never store it twice.
   */
  async publish(t, data, { type, key = newKey(), contentType = 'text/plain', attempts = 5 } = {}) {
    const headers = { 'Content-Type': contentType, 'Idempotency-Key': key };
    if (type) headers['Event-Type'] = type;
    for (let attempt = 0; ; attempt++) {
      let res;
      try {
        res = await this.request(`/v1/topics/${encodeURIComponent(t)}/events`, {
          method: 'POST', headers, body: data,
        });
      } catch (err) {
        // No answer: maybe stored, maybe not; the key makes the retry safe.
        if (attempt + 1 >= attempts) throw err;
        await sleep(backoff(attempt));
        continue;
      }
      if ((res.status === 429 || res.status === 503) && attempt + 1 < attempts) {
        const after = Number(res.headers.get('Retry-After')) * 1000 || 0;
        await sleep(Math.max(after, backoff(attempt)));
        continue;
      }
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new SluiceError(res.status, body);
      return {
        cursor: body.cursor,
        duplicate: body.duplicate,
        replayed: res.headers.get('Idempotent-Replayed') === 'true',
        key,
      };
    }
  }

  /** A live subscription to topic `t`; see {@link Subscription}. */
  subscribe(t, options = {}) {
    return new Subscription(this, t, options);
  }
}

const HISTORY_PAGE = 1000;

/**
 * A topic's events through EventSource, resumed after every disconnect from
 * the last event seen, so nothing is missed and nothing comes twice.
 *
 * Options: `from` ('latest' or 'earliest'), `cursor` (start after it), and
 * `types`: event types to listen for from the start (optional).
 *
 * An EventSource hands a page only the event types it listens for and
 * drops the others unseen. So when an event's position is not the one
 * after the last event delivered (same log epoch, sequence more than one
 * ahead), the events in between are read from history first, delivered in
 * order, and their types listened for from then on. An event skipped last,
 * with none after it yet, is found by `sync()`.
 *
 * Events (all CustomEvent, the payload in `detail`):
 * - `event`: `{id, type, data, time}` for each event, in order;
 * - `gap`: `{requested, resumed_after, lost}` when the position was out of
 *   retention: the stream went on from the oldest event still kept;
 * - `auth-expired`: `{expired_at}`; the module renews the token and goes on;
 * - `state`: `{state, attempts, downSecs, lastId}`, state being
 *   'connecting', 'connected', 'reconnecting' or 'closed'.
 */
export class Subscription extends EventTarget {
  constructor(client, t, { from = 'latest', cursor = null, types = [] } = {}) {
    super();
    this.client = client;
    this.topic = t;
    this.from = from;
    this.lastId = cursor;
    this.types = new Set();
    this.es = null;
    this.attempts = 0;
    this.downSince = null;
    this.closed = false;
    this.timer = null;
    // Frames waiting for their turn while history is read for a skipped
    // position: delivering them at once would break the order.
    this.queue = [];
    this.draining = false;
    this.setState('connecting');
    this.start().then(() => this.open());
    for (const type of types) this.listen(type);
  }

  /** Delivers events of `type` too from now on. */
  listen(type) {
    if (!type || type === 'message' || this.types.has(type)) return;
    this.types.add(type);
    if (this.es) this.es.addEventListener(type, this.onEvent);
  }

  /** Opens a new stream from the last event seen (after `listen` of a
   * type whose events already went by unseen). */
  reopen() {
    if (this.closed || !this.es) return;
    this.es.close();
    this.open();
  }

  /**
   * Delivers from history the events after the last one delivered, up to
   * the topic's end: those of types the stream dropped and no later event
   * has revealed yet. Resolves once they are delivered.
   */
  sync() {
    return new Promise((done) => {
      this.queue.push({ kind: 'sync', done });
      this.drain();
    });
  }

  /** Ends the subscription for good. */
  close() {
    this.closed = true;
    for (const item of this.queue) if (item.kind === 'sync') item.done();
    this.queue = [];
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.setState('closed');
  }

  setState(state) {
    this.state = state;
    const downSecs = this.downSince ? (Date.now() - this.downSince) / 1000 : 0;
    this.dispatchEvent(new CustomEvent('state', {
      detail: { state, attempts: this.attempts, downSecs, lastId: this.lastId },
    }));
  }

  // `from=latest` would start at whatever is newest when the stream opens,
  // and EventSource reopens with the same URL until an event has come: an
  // event published in between would be skipped. Start after the topic's
  // latest cursor instead (none yet: from the beginning), which is exact.
  async start() {
    if (this.lastId || this.from !== 'latest') return;
    try {
      const info = await this.client.topic(this.topic);
      if (info.latest_cursor) this.lastId = info.latest_cursor; else this.from = 'earliest';
    } catch (err) {
      if (err.status === 404) this.from = 'earliest';
    }
  }

  async url(renew) {
    // A new EventSource cannot send Last-Event-ID: the position goes in the
    // `cursor` parameter. The browser's own reconnects send Last-Event-ID,
    // which the broker puts first. `on_gap=resume`: a 416 would end an
    // EventSource for good, an `event: gap` tells what was lost.
    const q = new URLSearchParams({ on_gap: 'resume' });
    if (this.lastId) q.set('cursor', this.lastId); else q.set('from', this.from);
    const token = await this.client.token(renew).catch(() => null);
    if (token) q.set('access_token', token);
    return `${this.client.base}/v1/topics/${encodeURIComponent(this.topic)}/events?${q}`;
  }

  async open(renew = false) {
    if (this.closed) return;
    const es = new EventSource(await this.url(renew), {
      withCredentials: this.client.withCredentials,
    });
    if (this.closed) { es.close(); return; }
    this.es = es;
    es.onopen = () => {
      this.setState('connected');
      this.attempts = 0;
      this.downSince = null;
    };
    es.onmessage = this.onEvent;
    for (const type of this.types) es.addEventListener(type, this.onEvent);
    es.addEventListener('gap', (e) => {
      this.queue.push({ kind: 'gap', id: e.lastEventId, detail: JSON.parse(e.data) });
      this.drain();
    });
    es.addEventListener('auth-expired', (e) => {
      // Closed before the stream's end is read, so the browser does not
      // reconnect with the old token; reopened at once with a new one.
      // Reopened from the last event delivered, not from this frame's id:
      // events of unknown types before it were dropped unseen, and a
      // frame still queued comes again and is skipped as a repeat.
      es.close();
      this.dispatchEvent(new CustomEvent('auth-expired', { detail: JSON.parse(e.data) }));
      this.downSince = Date.now();
      this.setState('reconnecting');
      this.open(true);
    });
    es.onerror = () => {
      if (es !== this.es || this.closed) return;
      this.downSince = this.downSince || Date.now();
      this.attempts += 1;
      this.setState('reconnecting');
      // CONNECTING: the browser retries by itself, with Last-Event-ID.
      // CLOSED: it gave up (an answer other than 200: a 401, a 503 while
      // the broker starts): reopen from the last id, with a renewed token
      // (the refusal may be its expiry), after the backoff.
      if (es.readyState === EventSource.CLOSED) {
        this.timer = setTimeout(() => this.open(true), backoff(this.attempts - 1));
      }
    };
  }

  onEvent = (e) => {
    this.queue.push({ kind: 'event', id: e.lastEventId, type: e.type, data: e.data });
    this.drain();
  };

  // One frame at a time, in arrival order. Without a skipped position
  // nothing is awaited, so an event is delivered in the same task that
  // received it.
  async drain() {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length && !this.closed) {
        const item = this.queue[0];
        if (item.kind === 'event') {
          const pos = cursorPosition(item.id);
          if (this.skipped(pos)) await this.fill(pos);
          this.queue.shift();
          this.deliver(item.id, item.type, item.data);
        } else if (item.kind === 'gap') {
          this.queue.shift();
          // The stream went on after `resumed_after`: the next event is
          // expected right after it, not after the last one delivered.
          this.lastId = item.id || this.lastId;
          this.dispatchEvent(new CustomEvent('gap', { detail: item.detail }));
        } else {
          await this.fill(null);
          this.queue.shift();
          item.done();
        }
      }
    } finally {
      this.draining = false;
    }
  }

  // Whether positions between the last event delivered and `pos` went by
  // unseen. Another epoch (the log was recreated or recovered): nothing to
  // compare with. No position yet: only a stream from the beginning can
  // have dropped something before its first event.
  skipped(pos) {
    if (!pos) return false;
    const last = cursorPosition(this.lastId);
    if (!last) return this.lastId == null && this.from === 'earliest';
    return last.epoch === pos.epoch && pos.seq > last.seq + 1n;
  }

  // Delivers from history the events after the last one delivered and
  // before `upTo` (null: up to the end).
  async fill(upTo) {
    for (let attempt = 0; !this.closed;) {
      const before = this.lastId;
      let page;
      try {
        page = await this.client.history(this.topic, before
          ? { cursor: before, limit: HISTORY_PAGE }
          : { from: 'earliest', limit: HISTORY_PAGE });
      } catch (err) {
        // Positions lost (to damage, or trimmed by retention since the
        // stream passed them): the 416 names the last of them, and reading
        // goes on after it. The page hears of the loss as a `gap`, as the
        // stream would have told it: never a silent skip.
        const next = err.problem && err.problem.next_cursor;
        if (err.status === 416 && this.ahead(next, upTo)) {
          this.lastId = next;
          this.dispatchEvent(new CustomEvent('gap', {
            detail: { requested: before, resumed_after: next, lost: err.problem.lost ?? null },
          }));
          continue;
        }
        // The broker or the network failed: try again, the frames wait.
        // Any other refusal: history cannot be read, so deliver what came.
        if (err instanceof SluiceError && err.status < 500 && err.status !== 429) return;
        await sleep(backoff(attempt++));
        continue;
      }
      attempt = 0;
      for (const ev of page.events) {
        const pos = cursorPosition(ev.cursor);
        if (upTo && pos && pos.epoch === upTo.epoch && pos.seq >= upTo.seq) return;
        if (this.repeat(ev.cursor)) continue;
        if (ev.type) this.listen(ev.type);
        this.deliver(ev.cursor, ev.type || 'message', ev.data);
      }
      // A short page is the end, unless lost positions cut it short: then
      // the next read gets their 416.
      if (!upTo && page.events.length < HISTORY_PAGE) return;
      if (!page.events.length || this.lastId === before) return;
    }
  }

  // Whether `cursor` is a position after the last delivered and before
  // `upTo` in the same epoch, i.e. a step forward in a fill.
  ahead(cursor, upTo) {
    const pos = cursorPosition(cursor);
    const last = cursorPosition(this.lastId);
    if (!pos || (last && (last.epoch !== pos.epoch || pos.seq <= last.seq))) return false;
    return !upTo || (upTo.epoch === pos.epoch && pos.seq < upTo.seq);
  }

  // An event at or before the last one delivered: a reopened stream or a
  // fill brought it already.
  repeat(cursor) {
    const pos = cursorPosition(cursor);
    const last = cursorPosition(this.lastId);
    return !!(pos && last && pos.epoch === last.epoch && pos.seq <= last.seq);
  }

  deliver(id, type, data) {
    if (this.repeat(id)) return;
    this.lastId = id || this.lastId;
    this.dispatchEvent(new CustomEvent('event', {
      detail: { id, type, data, time: cursorTime(id) },
    }));
  }
}
