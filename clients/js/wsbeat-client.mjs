// wsbeat-client: a browser (and Node) client for wsbeat's heartbeat protocol.
// Dependency-free ES module; see clients/js/README.md and wsbeat-client.d.ts.
//
// Every deadline (next heartbeat, silence, token refresh, reconnect, connect
// timeout) is a wall-clock time compared with Date.now() whenever a timer
// fires, the page becomes visible or the network comes back: background tabs
// throttle timers and a suspended machine stops them, so counting timer ticks
// would be wrong by minutes.

/** Close codes after which reconnecting cannot help. */
const TERMINAL = new Set([
  1008, // bad or mismatched client id
  4001, // replaced by a newer connection with the same id (another tab)
  4003, // kicked
  4403, // refused by the connect webhook
]);
const UNAUTHORIZED = 4401;
/** The server's text heartbeat (--server-heartbeat text|both). */
const SERVER_HEARTBEAT = 'heartbeat';
/** A connection open this long counts as good: the backoff starts over. */
const STABLE_AFTER_MS = 5000;
/** An upgrade that takes longer is given up (a frozen server accepts TCP). */
const CONNECT_TIMEOUT_MS = 10000;
/** How long a close event may follow an error before the client moves on. */
const ERROR_GRACE_MS = 1000;
/** Timers wake at least this often so that wall-clock deadlines are seen
 * soon after a suspend (timers do not run while the machine sleeps). */
const MAX_TIMER_MS = 1000;
/** Refresh a token this long before its exp at most (half its remaining
 * lifetime when that is shorter). */
const REFRESH_MARGIN_MS = 60000;
/** A failed or useless refresh is tried again after this long. */
const REFRESH_RETRY_MS = 5000;

const EVENTS = ['open', 'message', 'close', 'state'];

/** The `exp` claim of a JWT in milliseconds, or null for an opaque token. */
export function jwtExpiryMs(token) {
  try {
    const part = String(token).split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Exponential backoff with full jitter, the jitter applied after the cap:
 * uniform in [0, min(max, min * 2^attempt)]. Jitter before the cap would put
 * every client at exactly the cap after a long outage, all together. */
export function backoffDelay(attempt, min, max, random = Math.random) {
  const cap = Math.min(max, min * 2 ** Math.min(attempt, 52));
  return random() * cap;
}

function reportLater(err) {
  // A throwing listener must not break the client's state machine.
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else queueMicrotask(() => { throw err; });
}

export class WsbeatClient {
  /**
   * @param {string} url ws:// or wss:// URL of the wsbeat endpoint
   * @param {object} [options] see wsbeat-client.d.ts
   */
  constructor(url, options = {}) {
    const o = options;
    this._url = String(url);
    this._id = o.id ?? null;
    this._getToken = o.getToken ?? null;
    this._heartbeatInterval = o.heartbeatInterval ?? 25000;
    this._silenceTimeout = o.silenceTimeout ?? 0;
    this._minDelay = o.minReconnectDelay ?? 500;
    this._maxDelay = o.maxReconnectDelay ?? 30000;
    // Hidden, for tests: the clock, timers, randomness, WebSocket and the
    // window/document whose online and visibility events are followed.
    this._now = o._now ?? (() => Date.now());
    this._setTimeout = o._setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    this._clearTimeout = o._clearTimeout ?? ((t) => clearTimeout(t));
    this._random = o._random ?? Math.random;
    this._WebSocket = '_WebSocket' in o ? o._WebSocket : globalThis.WebSocket;
    this._connectTimeout = o._connectTimeout ?? CONNECT_TIMEOUT_MS;
    const win = '_window' in o ? o._window : globalThis.window;
    const doc = '_document' in o ? o._document : globalThis.document;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('WsbeatClient needs a global WebSocket (Node 22+, or 20 with --experimental-websocket)');
    }

    this._listeners = new Map(EVENTS.map((e) => [e, new Set()]));
    this.state = 'connecting';
    this._ws = null;
    this._gen = 0; // bumped per connection attempt; stale callbacks compare it
    this._attempt = 0;
    this._timer = null;
    this._token = null;
    this._tokenExp = null; // ms
    this._refreshAt = null; // ms
    this._refreshing = false;
    this._needFreshToken = true;
    this._tokenPending = false;
    this._reconnectAt = null;
    this._connectDeadline = null;
    this._errorDeadline = null;
    this._openedAt = null;
    this._lastFrameAt = null;
    this._heartbeatAt = null;

    this._onWake = () => this._wake();
    this._onVisibility = () => {
      if (!this._doc || this._doc.visibilityState !== 'hidden') this._wake();
    };
    this._win = win && typeof win.addEventListener === 'function' ? win : null;
    this._doc = doc && typeof doc.addEventListener === 'function' ? doc : null;
    this._win?.addEventListener('online', this._onWake);
    this._doc?.addEventListener('visibilitychange', this._onVisibility);

    this._connect();
  }

  /** Subscribes `fn` to `event`; returns a function that unsubscribes it. */
  on(event, fn) {
    const set = this._listeners.get(event);
    if (!set) throw new TypeError(`unknown event ${event}: one of ${EVENTS.join(', ')}`);
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    // A wrapper, so that the same function subscribed twice is two
    // subscriptions, each with its own unsubscribe.
    const entry = (arg) => fn(arg);
    set.add(entry);
    return () => void set.delete(entry);
  }

  /** Sends a text or binary message; false (nothing sent) unless open. */
  send(data) {
    if (this.state !== 'open' || !this._ws) return false;
    this._ws.send(data);
    return true;
  }

  /** Closes for good: no reconnect. The close event follows once the
   * socket has closed (at once when there is none). */
  close() {
    if (this.state === 'closed') return;
    this._clearTimer();
    this._win?.removeEventListener('online', this._onWake);
    this._doc?.removeEventListener('visibilitychange', this._onVisibility);
    const ws = this._ws;
    this._gen++;
    this._ws = null;
    this._setState('closed');
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = null;
      ws.onclose = (e) => this._emit('close', { code: e.code, reason: e.reason, willReconnect: false });
      try {
        ws.close(1000);
      } catch {
        // Already closing.
      }
    }
  }

  // --- internals ------------------------------------------------------------

  _emit(event, arg) {
    for (const fn of [...this._listeners.get(event)]) {
      try {
        fn(arg);
      } catch (err) {
        reportLater(err);
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state);
  }

  _buildUrl() {
    const base = globalThis.location?.href;
    const u = base ? new URL(this._url, base) : new URL(this._url);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    if (u.protocol === 'https:') u.protocol = 'wss:';
    if (this._id != null) u.searchParams.set('client_id', this._id);
    if (this._token != null) u.searchParams.set('token', this._token);
    return u.toString();
  }

  _setToken(token) {
    this._token = token;
    this._tokenExp = jwtExpiryMs(token);
    if (this._tokenExp == null) {
      this._refreshAt = null;
    } else {
      const remaining = this._tokenExp - this._now();
      this._refreshAt = this._tokenExp - Math.max(0, Math.min(REFRESH_MARGIN_MS, remaining / 2));
    }
  }

  _tokenStale() {
    return this._needFreshToken || (this._refreshAt != null && this._now() >= this._refreshAt);
  }

  _connect() {
    if (this.state === 'closed') return;
    this._reconnectAt = null;
    const gen = ++this._gen;
    if (this._getToken && this._tokenStale()) {
      this._tokenPending = true;
      let got;
      try {
        got = Promise.resolve(this._getToken());
      } catch (err) {
        got = Promise.reject(err);
      }
      got.then(
        (token) => {
          if (gen !== this._gen) return;
          this._tokenPending = false;
          if (token == null || token === '') {
            // The application has no token to give (signed out): stop.
            this._finish(UNAUTHORIZED, 'no token', false);
            return;
          }
          this._needFreshToken = false;
          this._setToken(String(token));
          this._open(gen);
        },
        (err) => {
          if (gen !== this._gen) return;
          this._tokenPending = false;
          this._finish(UNAUTHORIZED, `getToken failed: ${err?.message ?? err}`, true);
        },
      );
      return;
    }
    this._open(gen);
  }

  _open(gen) {
    let ws;
    try {
      ws = new this._WebSocket(this._buildUrl());
    } catch (err) {
      // A malformed URL will not get better.
      this._finish(1006, `cannot connect: ${err?.message ?? err}`, false);
      return;
    }
    this._ws = ws;
    ws.binaryType = 'arraybuffer';
    this._connectDeadline = this._now() + this._connectTimeout;
    ws.onopen = () => {
      if (gen !== this._gen) return;
      const now = this._now();
      this._connectDeadline = null;
      this._openedAt = now;
      this._lastFrameAt = now;
      this._heartbeatAt = now + this._heartbeatInterval;
      this._setState('open');
      this._emit('open');
      this._check();
    };
    ws.onmessage = (e) => {
      if (gen !== this._gen) return;
      this._lastFrameAt = this._now();
      if (e.data === SERVER_HEARTBEAT) return;
      this._emit('message', e.data);
    };
    ws.onerror = () => {
      if (gen !== this._gen) return;
      // Browsers follow an error with a close event that says what
      // happened; some implementations (Node 20's) do not when the
      // connection never opened, and a failed attempt always closes 1006.
      if (this._openedAt == null) this._drop('');
      else if (this._errorDeadline == null) {
        this._errorDeadline = this._now() + ERROR_GRACE_MS;
        this._schedule();
      }
    };
    ws.onclose = (e) => {
      if (gen !== this._gen) return;
      this._ws = null;
      this._closed(e.code, e.reason ?? '');
    };
    this._schedule();
  }

  /** The server (or the network) closed the connection. */
  _closed(code, reason) {
    if (code === UNAUTHORIZED) {
      if (!this._getToken) {
        this._finish(code, reason, false);
        return;
      }
      this._needFreshToken = true;
    }
    this._finish(code, reason, !TERMINAL.has(code));
  }

  /** Gives up on the current connection locally (silence, connect timeout):
   * a dead peer may never complete a closing handshake, so the socket is
   * left to itself and the client moves on at once. */
  _drop(reason) {
    const ws = this._ws;
    this._ws = null;
    this._gen++;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(4000, reason);
      } catch {
        // Still connecting in some implementations: nothing to close politely.
      }
    }
    this._finish(1006, reason, true);
  }

  _finish(code, reason, willReconnect) {
    const now = this._now();
    if (this._openedAt != null && now - this._openedAt >= STABLE_AFTER_MS) this._attempt = 0;
    this._openedAt = null;
    this._connectDeadline = null;
    this._errorDeadline = null;
    this._heartbeatAt = null;
    this._lastFrameAt = null;
    this._refreshing = false;
    if (willReconnect) {
      const delay = backoffDelay(this._attempt++, this._minDelay, this._maxDelay, this._random);
      this._reconnectAt = now + delay;
      this._setState('reconnecting');
      this._emit('close', { code, reason, willReconnect: true });
      this._schedule();
    } else {
      this._clearTimer();
      this._win?.removeEventListener('online', this._onWake);
      this._doc?.removeEventListener('visibilitychange', this._onVisibility);
      this._gen++;
      this._setState('closed');
      this._emit('close', { code, reason, willReconnect: false });
    }
  }

  /** Network back, or page visible again: reconnect now if waiting to,
   * and look at the deadlines (timers may have been throttled). */
  _wake() {
    if (this.state === 'closed') return;
    if (this.state === 'reconnecting' && !this._ws && !this._tokenPending) {
      this._connect();
      return;
    }
    this._check();
  }

  _check() {
    if (this.state === 'closed') return;
    const now = this._now();
    if (this._reconnectAt != null && now >= this._reconnectAt) {
      this._connect();
      return;
    }
    if (this._connectDeadline != null && now >= this._connectDeadline) {
      this._drop('connect timeout');
      return;
    }
    if (this._errorDeadline != null && now >= this._errorDeadline) {
      this._drop('');
      return;
    }
    if (this.state === 'open' && this._ws) {
      if (this._silenceTimeout > 0 && now - this._lastFrameAt >= this._silenceTimeout) {
        this._drop('silence timeout');
        return;
      }
      if (now >= this._heartbeatAt) {
        this._ws.send('heartbeat');
        this._heartbeatAt = now + this._heartbeatInterval;
      }
      if (this._getToken && this._refreshAt != null && now >= this._refreshAt && !this._refreshing) {
        this._refresh();
      }
    }
    this._schedule();
  }

  _refresh() {
    const gen = this._gen;
    this._refreshing = true;
    const retry = () => {
      // Another try later, unless the token expires first (the server then
      // closes with 4401 and the reconnect asks for a fresh one).
      this._refreshAt = this._now() + REFRESH_RETRY_MS;
    };
    let got;
    try {
      got = Promise.resolve(this._getToken());
    } catch (err) {
      got = Promise.reject(err);
    }
    got.then(
      (token) => {
        if (gen !== this._gen) return;
        this._refreshing = false;
        const exp = token ? jwtExpiryMs(token) : null;
        if (exp != null && (this._tokenExp == null || exp > this._tokenExp) && this.state === 'open') {
          this._ws.send(`token ${token}`);
          this._setToken(String(token));
        } else {
          retry();
        }
        this._schedule();
      },
      () => {
        if (gen !== this._gen) return;
        this._refreshing = false;
        retry();
        this._schedule();
      },
    );
  }

  _clearTimer() {
    if (this._timer != null) this._clearTimeout(this._timer);
    this._timer = null;
  }

  /** One timer, for the earliest deadline (at most MAX_TIMER_MS away). */
  _schedule() {
    this._clearTimer();
    if (this.state === 'closed') return;
    const deadlines = [this._reconnectAt, this._connectDeadline, this._errorDeadline];
    if (this.state === 'open') {
      deadlines.push(this._heartbeatAt);
      if (this._silenceTimeout > 0) deadlines.push(this._lastFrameAt + this._silenceTimeout);
      if (this._getToken && !this._refreshing) deadlines.push(this._refreshAt);
    }
    const next = Math.min(...deadlines.filter((d) => d != null));
    if (!Number.isFinite(next)) return;
    const delay = Math.max(0, Math.min(MAX_TIMER_MS, next - this._now()));
    this._timer = this._setTimeout(() => {
      this._timer = null;
      this._check();
    }, delay);
  }
}

export default WsbeatClient;
