// A fake clock with timers, a fake WebSocket and fake window/document, for
// driving WsbeatClient deterministically under `node --test`.

import { WsbeatClient } from '../../wsbeat-client.mjs';

/** Where every fake clock starts (ms; a whole second). */
export const START = 1_800_000_000_000;

export class FakeClock {
  constructor(start = START) {
    this.now = start;
    this.timers = new Map();
    this.nextId = 1;
  }
  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  };
  clearTimeout = (id) => void this.timers.delete(id);
  /** Runs the timers due within `ms`, in order, moving the clock with them. */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = Math.max(this.now, next[1].at);
      next[1].fn();
    }
    this.now = end;
  }
  /** Moves the wall clock without running timers (a throttled or
   * suspended page). */
  jump(ms) {
    this.now += ms;
  }
}

export class FakeEvents {
  constructor(props = {}) {
    Object.assign(this, props);
    this.listeners = new Map();
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }
  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  dispatch(type) {
    for (const fn of [...(this.listeners.get(type) ?? [])]) fn({ type });
  }
  count(type) {
    return this.listeners.get(type)?.size ?? 0;
  }
}

export function makeFakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closedWith = null;
      this.readyState = 0;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(data);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }
    // Test side: what the server or the network does.
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }
    serverSend(data) {
      this.onmessage?.({ data });
    }
    serverError() {
      this.onerror?.({ type: 'error' });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
  }
  return { FakeWebSocket, sockets };
}

/** Lets pending promise callbacks (getToken) run. */
export const flush = () => new Promise((r) => setImmediate(r));

/** A client wired to fakes; returns everything a test looks at. */
export function harness(options = {}, { random } = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const win = new FakeEvents();
  const doc = new FakeEvents({ visibilityState: 'visible' });
  const events = [];
  const client = new WsbeatClient('ws://wsbeat.test/ws', {
    heartbeatInterval: 1000,
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    ...options,
    _now: () => clock.now,
    _setTimeout: clock.setTimeout,
    _clearTimeout: clock.clearTimeout,
    _random: random ?? Math.random,
    _WebSocket: FakeWebSocket,
    _window: win,
    _document: doc,
  });
  for (const e of ['open', 'message', 'close', 'state']) client.on(e, (arg) => events.push([e, arg]));
  const last = () => sockets[sockets.length - 1];
  return { client, clock, sockets, last, win, doc, events, of: (e) => events.filter(([n]) => n === e).map(([, a]) => a) };
}

/** An unsigned JWT-shaped token whose payload carries `exp` (seconds). */
export function jwt(payload) {
  const b64url = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(payload)}.sig`;
}
