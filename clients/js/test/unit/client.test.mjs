// Unit tests of WsbeatClient's backoff and state machine, with a fake clock
// and a fake WebSocket: `node --test clients/js/test/unit/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { WsbeatClient, backoffDelay, jwtExpiryMs } from '../../wsbeat-client.mjs';
import { START, flush, harness, jwt } from './fakes.mjs';

test('connects with client_id and sends heartbeat every interval', () => {
  const h = harness({ id: 'device 42', heartbeatInterval: 1000 });
  assert.equal(h.client.state, 'connecting');
  assert.equal(h.sockets.length, 1);
  const url = new URL(h.last().url);
  assert.equal(url.searchParams.get('client_id'), 'device 42');
  assert.equal(url.searchParams.get('token'), null);
  h.last().serverOpen();
  assert.equal(h.client.state, 'open');
  assert.deepEqual(h.of('state'), ['open']);
  assert.equal(h.of('open').length, 1);
  h.clock.advance(999);
  assert.deepEqual(h.last().sent, []);
  h.clock.advance(1);
  assert.deepEqual(h.last().sent, ['heartbeat']);
  h.clock.advance(2000);
  assert.deepEqual(h.last().sent, ['heartbeat', 'heartbeat', 'heartbeat']);
  h.client.close();
});

test('server text heartbeats are not delivered as messages', () => {
  const h = harness({ id: 'a' });
  h.last().serverOpen();
  h.last().serverSend('heartbeat');
  h.last().serverSend('hello');
  h.last().serverSend('heartbeats');
  const bin = new Uint8Array([1, 2]).buffer;
  h.last().serverSend(bin);
  assert.deepEqual(h.of('message'), ['hello', 'heartbeats', bin]);
  assert.equal(h.last().binaryType, 'arraybuffer');
  h.client.close();
});

test('send works only while open', () => {
  const h = harness({ id: 'a' });
  assert.equal(h.client.send('early'), false);
  h.last().serverOpen();
  assert.equal(h.client.send('hi'), true);
  assert.deepEqual(h.last().sent, ['hi']);
  h.client.close();
  assert.equal(h.client.send('late'), false);
});

test('on() returns an unsubscribe function; unknown events are refused', () => {
  const h = harness({ id: 'a' });
  const got = [];
  const off = h.client.on('message', (m) => got.push(m));
  h.last().serverOpen();
  h.last().serverSend('one');
  off();
  off(); // twice is harmless
  h.last().serverSend('two');
  assert.deepEqual(got, ['one']);
  assert.deepEqual(h.of('message'), ['one', 'two']);
  assert.throws(() => h.client.on('nope', () => {}), TypeError);
  h.client.close();
});

test('a throwing listener does not break the client', async () => {
  const h = harness({ id: 'a' });
  const errors = [];
  const saved = globalThis.reportError;
  globalThis.reportError = (e) => errors.push(e);
  try {
    h.client.on('open', () => {
      throw new Error('boom');
    });
    h.last().serverOpen();
    assert.equal(h.client.state, 'open');
    assert.equal(h.of('open').length, 1);
    assert.equal(errors.length, 1);
  } finally {
    globalThis.reportError = saved;
    h.client.close();
  }
});

test('backoff: full jitter after the cap, spread over [0, cap]', () => {
  const min = 100;
  const max = 1000;
  // Bounds at each attempt, with the extremes of the random source.
  for (let attempt = 0; attempt < 20; attempt++) {
    const cap = Math.min(max, min * 2 ** attempt);
    assert.equal(backoffDelay(attempt, min, max, () => 0), 0);
    assert.equal(backoffDelay(attempt, min, max, () => 0.999999), 0.999999 * cap);
  }
  assert.equal(backoffDelay(5000, min, max, () => 0.5), 500, 'no overflow on a long outage');

  // Through the client: many failures in a row, far past the cap.
  const h = harness({ id: 'a', minReconnectDelay: min, maxReconnectDelay: max });
  const delays = [];
  for (let i = 0; i < 300; i++) {
    h.last().serverClose(1006);
    assert.equal(h.client.state, 'reconnecting');
    const timers = [...h.clock.timers.values()];
    assert.equal(timers.length, 1);
    delays.push(h.client._reconnectAt - h.clock.now);
    const before = h.sockets.length;
    h.clock.advance(max);
    assert.equal(h.sockets.length, before + 1, 'reconnected within the cap');
  }
  for (const [i, d] of delays.entries()) {
    const cap = Math.min(max, min * 2 ** i);
    assert.ok(d >= 0 && d <= cap, `attempt ${i}: ${d} outside [0, ${cap}]`);
  }
  // Past the cap the delays are spread over [0, cap], not bunched at it.
  const late = delays.slice(10);
  assert.ok(late.some((d) => d < max / 4), `none below a quarter of the cap: ${late}`);
  assert.ok(late.some((d) => d > (3 * max) / 4), `none above three quarters of the cap: ${late}`);
  assert.ok(late.filter((d) => d === max).length < late.length / 10, 'not all at the cap');
  h.client.close();
});

test('backoff starts over after a connection that stayed up', () => {
  const h = harness({ id: 'a', minReconnectDelay: 100, maxReconnectDelay: 100000 }, { random: () => 1 });
  for (let i = 0; i < 5; i++) {
    h.last().serverClose(1006);
    h.clock.advance(100000);
  }
  h.last().serverOpen();
  h.clock.advance(6000);
  h.last().serverClose(1001);
  assert.equal(h.client._reconnectAt - h.clock.now, 100);
  // A connection that opens and is closed at once (4002, 4401) does not.
  h.clock.advance(100);
  h.last().serverOpen();
  h.last().serverClose(4002);
  assert.equal(h.client._reconnectAt - h.clock.now, 200);
  h.client.close();
});

for (const code of [1008, 4001, 4003, 4403]) {
  test(`close ${code} is terminal`, () => {
    const h = harness({ id: 'a' });
    h.last().serverOpen();
    h.last().serverClose(code, 'why');
    assert.equal(h.client.state, 'closed');
    assert.deepEqual(h.of('close'), [{ code, reason: 'why', willReconnect: false }]);
    assert.deepEqual(h.of('state'), ['open', 'closed']);
    assert.equal(h.clock.timers.size, 0, 'no timer left');
    assert.equal(h.win.count('online') + h.doc.count('visibilitychange'), 0, 'listeners removed');
    h.win.dispatch('online');
    h.clock.advance(3_600_000);
    assert.equal(h.sockets.length, 1);
  });
}

for (const code of [4002, 4000, 1001, 1006, 1011]) {
  test(`close ${code} is retried with backoff`, () => {
    const h = harness({ id: 'a', minReconnectDelay: 100 });
    h.last().serverOpen();
    h.last().serverClose(code);
    assert.equal(h.client.state, 'reconnecting');
    assert.deepEqual(h.of('close'), [{ code, reason: '', willReconnect: true }]);
    h.clock.advance(100);
    assert.equal(h.sockets.length, 2);
    assert.equal(new URL(h.sockets[1].url).searchParams.get('client_id'), 'a');
    h.last().serverOpen();
    assert.deepEqual(h.of('state'), ['open', 'reconnecting', 'open']);
    h.client.close();
  });
}

test('4401 without getToken is terminal', () => {
  const h = harness({ id: 'a' });
  h.last().serverOpen();
  h.last().serverClose(4401, 'unauthorized: token expired');
  assert.equal(h.client.state, 'closed');
  assert.deepEqual(h.of('close'), [{ code: 4401, reason: 'unauthorized: token expired', willReconnect: false }]);
  h.clock.advance(100000);
  assert.equal(h.sockets.length, 1);
});

test('getToken gives ?token=; 4401 asks it for a fresh one', async () => {
  let n = 0;
  const exp = () => START / 1000 + 3600;
  const tokens = [];
  const h = harness({
    getToken: async () => {
      const t = jwt({ sub: 'a', exp: exp(), n: n++ });
      tokens.push(t);
      return t;
    },
  });
  assert.equal(h.sockets.length, 0, 'waits for the token');
  await flush();
  assert.equal(h.sockets.length, 1);
  assert.equal(new URL(h.last().url).searchParams.get('token'), tokens[0]);
  h.last().serverOpen();
  // A plain drop reuses the token it has.
  h.last().serverClose(1006);
  h.clock.advance(1000);
  await flush();
  assert.equal(tokens.length, 1);
  assert.equal(new URL(h.last().url).searchParams.get('token'), tokens[0]);
  // 4401: a fresh one.
  h.last().serverOpen();
  h.last().serverClose(4401, 'unauthorized: bad signature');
  assert.equal(h.client.state, 'reconnecting');
  assert.equal(h.of('close').at(-1).willReconnect, true);
  h.clock.advance(1000);
  await flush();
  assert.equal(tokens.length, 2);
  assert.equal(h.sockets.length, 3);
  assert.equal(new URL(h.last().url).searchParams.get('token'), tokens[1]);
  h.client.close();
});

test('getToken returning nothing stops the client', async () => {
  const h = harness({ getToken: () => null });
  await flush();
  assert.equal(h.client.state, 'closed');
  assert.equal(h.sockets.length, 0);
  assert.deepEqual(h.of('close'), [{ code: 4401, reason: 'no token', willReconnect: false }]);
});

test('a failing getToken is retried with backoff', async () => {
  let fail = true;
  const h = harness({
    getToken: () => {
      if (fail) throw new Error('offline');
      return jwt({ exp: START / 1000 + 3600 });
    },
  });
  await flush();
  assert.equal(h.client.state, 'reconnecting');
  assert.equal(h.of('close')[0].willReconnect, true);
  fail = false;
  h.clock.advance(1000);
  await flush();
  assert.equal(h.sockets.length, 1);
});

test('the token is refreshed before exp with a text message', async () => {
  const start = START;
  let next = start / 1000 + 600; // a 10-minute token
  const h = harness({ getToken: () => jwt({ sub: 'a', exp: next }), heartbeatInterval: 1e9 });
  assert.equal(h.clock.now, start);
  await flush();
  const first = new URL(h.last().url).searchParams.get('token');
  assert.equal(jwtExpiryMs(first), (start / 1000 + 600) * 1000);
  h.last().serverOpen();
  // 60 s before exp, not earlier.
  h.clock.advance(540_000 - 1);
  await flush();
  assert.deepEqual(h.last().sent, []);
  next = start / 1000 + 1200;
  h.clock.advance(1);
  await flush();
  assert.deepEqual(h.last().sent, [`token ${jwt({ sub: 'a', exp: next })}`]);
  // And the next one 60 s before the new exp.
  h.clock.advance(600_000 - 1);
  await flush();
  assert.equal(h.last().sent.length, 1);
  next = start / 1000 + 1800;
  h.clock.advance(1);
  await flush();
  assert.equal(h.last().sent.length, 2);
  assert.equal(h.sockets.length, 1);
  h.client.close();
});

test('a short-lived token is refreshed at half its lifetime', async () => {
  const start = START;
  let exp = start / 1000 + 10;
  const h = harness({ getToken: () => jwt({ exp }), heartbeatInterval: 1e9 });
  await flush();
  h.last().serverOpen();
  h.clock.advance(4999);
  await flush();
  assert.deepEqual(h.last().sent, []);
  exp += 10;
  h.clock.advance(1);
  await flush();
  assert.equal(h.last().sent.length, 1);
  assert.match(h.last().sent[0], /^token /);
  h.client.close();
});

test('a refresh that would not expire later is not sent, and is tried again', async () => {
  const start = START;
  let exp = start / 1000 + 600;
  const h = harness({ getToken: () => jwt({ exp }), heartbeatInterval: 1e9 });
  await flush();
  h.last().serverOpen();
  h.clock.advance(540_000);
  await flush();
  assert.deepEqual(h.last().sent, [], 'the same token again is not sent');
  exp += 600;
  h.clock.advance(5000);
  await flush();
  assert.equal(h.last().sent.length, 1);
  h.client.close();
});

test('an expired cached token is replaced before reconnecting', async () => {
  const start = START;
  let exp = start / 1000 + 100;
  let calls = 0;
  const h = harness({
    getToken: () => {
      calls++;
      return jwt({ exp });
    },
    heartbeatInterval: 1e9,
  });
  await flush();
  h.last().serverClose(1006); // never opened: no refresh was due
  exp += 1000;
  h.clock.jump(200_000);
  h.clock.advance(1000);
  await flush();
  assert.equal(calls, 2);
  assert.equal(jwtExpiryMs(new URL(h.last().url).searchParams.get('token')), exp * 1000);
  h.client.close();
});

test('silence: no frame for silenceTimeout closes and reconnects', () => {
  const h = harness({ id: 'a', silenceTimeout: 3000, heartbeatInterval: 1000, minReconnectDelay: 100 });
  h.last().serverOpen();
  // Server heartbeats keep it alive.
  for (let i = 0; i < 10; i++) {
    h.clock.advance(2000);
    h.last().serverSend('heartbeat');
  }
  assert.equal(h.client.state, 'open');
  assert.deepEqual(h.of('message'), []);
  // Our own heartbeats do not count: only what the server sends.
  h.clock.advance(2999);
  assert.equal(h.client.state, 'open');
  h.clock.advance(1);
  assert.equal(h.client.state, 'reconnecting');
  assert.deepEqual(h.of('close'), [{ code: 1006, reason: 'silence timeout', willReconnect: true }]);
  assert.deepEqual(h.sockets[0].closedWith, { code: 4000, reason: 'silence timeout' });
  // The dead socket's late close event changes nothing.
  h.sockets[0].serverClose(1006);
  assert.equal(h.of('close').length, 1);
  h.clock.advance(100);
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

test('silence is measured on the wall clock, and checked when the page becomes visible', () => {
  const h = harness({ id: 'a', silenceTimeout: 30000, heartbeatInterval: 25000 });
  h.last().serverOpen();
  h.doc.visibilityState = 'hidden';
  h.doc.dispatch('visibilitychange');
  // A throttled background tab: the wall clock runs, timers do not.
  h.clock.jump(120000);
  assert.equal(h.client.state, 'open');
  h.doc.visibilityState = 'visible';
  h.doc.dispatch('visibilitychange');
  assert.equal(h.client.state, 'reconnecting');
  assert.equal(h.of('close')[0].reason, 'silence timeout');
  h.client.close();
});

test('a late timer sends the heartbeat that is due at once', () => {
  const h = harness({ id: 'a', heartbeatInterval: 25000 });
  h.last().serverOpen();
  h.clock.jump(60000);
  h.clock.advance(0);
  assert.deepEqual(h.last().sent, ['heartbeat']);
  h.clock.advance(24999);
  assert.deepEqual(h.last().sent, ['heartbeat']);
  h.clock.advance(1);
  assert.equal(h.last().sent.length, 2);
  h.client.close();
});

test('an upgrade that never completes is given up and retried', () => {
  const h = harness({ id: 'a', minReconnectDelay: 100, _connectTimeout: 5000 });
  h.clock.advance(4999);
  assert.equal(h.client.state, 'connecting');
  h.clock.advance(1);
  assert.equal(h.client.state, 'reconnecting');
  assert.equal(h.of('close')[0].reason, 'connect timeout');
  h.clock.advance(100);
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

test('online reconnects at once while waiting to', () => {
  const h = harness({ id: 'a', minReconnectDelay: 60000, maxReconnectDelay: 60000 }, { random: () => 1 });
  h.last().serverOpen();
  h.last().serverClose(1006);
  assert.equal(h.client.state, 'reconnecting');
  h.clock.advance(1000);
  assert.equal(h.sockets.length, 1);
  h.win.dispatch('online');
  assert.equal(h.sockets.length, 2);
  // While that attempt is under way, another online starts no second one.
  h.win.dispatch('online');
  assert.equal(h.sockets.length, 2);
  h.last().serverOpen();
  h.win.dispatch('online');
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

test('a page made visible again reconnects at once after a drop', () => {
  const h = harness({ id: 'a', minReconnectDelay: 60000, maxReconnectDelay: 60000 }, { random: () => 1 });
  h.last().serverOpen();
  h.doc.visibilityState = 'hidden';
  h.doc.dispatch('visibilitychange');
  h.last().serverClose(1006);
  assert.equal(h.sockets.length, 1, 'hidden: waits');
  h.doc.visibilityState = 'visible';
  h.doc.dispatch('visibilitychange');
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

test('close() is final: no reconnect, close event when the socket closes', () => {
  const h = harness({ id: 'a' });
  h.last().serverOpen();
  const ws = h.last();
  h.client.close();
  assert.equal(h.client.state, 'closed');
  assert.deepEqual(ws.closedWith, { code: 1000, reason: undefined });
  assert.equal(h.clock.timers.size, 0);
  ws.serverClose(1000);
  assert.deepEqual(h.of('close'), [{ code: 1000, reason: '', willReconnect: false }]);
  assert.deepEqual(h.of('state'), ['open', 'closed']);
  h.win.dispatch('online');
  h.clock.advance(100000);
  assert.equal(h.sockets.length, 1);
  h.client.close(); // twice is harmless
});

test('close() while waiting to reconnect, or for a token, stops everything', async () => {
  const h = harness({ id: 'a' });
  h.last().serverClose(1006);
  h.client.close();
  h.clock.advance(100000);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.clock.timers.size, 0);

  const t = harness({ getToken: async () => jwt({ exp: 4e9 }) });
  t.client.close();
  await flush();
  assert.equal(t.sockets.length, 0);
});

test('the URL keeps its path and query; the id is percent-encoded', () => {
  const urls = [];
  const client = new WsbeatClient('ws://wsbeat.test/ws?room=7', {
    id: 'a b&c',
    _WebSocket: class {
      constructor(url) {
        urls.push(url);
      }
      close() {}
    },
    _window: null,
    _document: null,
  });
  client.close();
  const u = new URL(urls[0]);
  assert.equal(u.pathname, '/ws');
  assert.equal(u.searchParams.get('room'), '7');
  assert.equal(u.searchParams.get('client_id'), 'a b&c');
  assert.ok(!urls[0].includes(' '), urls[0]);
});

test('without a WebSocket it says what is needed', () => {
  assert.throws(() => new WsbeatClient('ws://x/', { _WebSocket: undefined }), /global WebSocket/);
});

test('a failed attempt with an error and no close event is retried', () => {
  const h = harness({ id: 'a', minReconnectDelay: 100 });
  h.last().serverError();
  assert.equal(h.client.state, 'reconnecting');
  assert.deepEqual(h.of('close'), [{ code: 1006, reason: '', willReconnect: true }]);
  h.last().serverClose(1006); // a late close changes nothing
  assert.equal(h.of('close').length, 1);
  h.clock.advance(100);
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

test('an error on an open connection waits for its close event, not forever', () => {
  const h = harness({ id: 'a', heartbeatInterval: 1e9 });
  h.last().serverOpen();
  h.last().serverError();
  assert.equal(h.client.state, 'open');
  h.last().serverClose(4001, 'replaced');
  assert.deepEqual(h.of('close'), [{ code: 4001, reason: 'replaced', willReconnect: false }]);

  const g = harness({ id: 'b', heartbeatInterval: 1e9 });
  g.last().serverOpen();
  g.last().serverError();
  g.clock.advance(999);
  assert.equal(g.client.state, 'open');
  g.clock.advance(1);
  assert.equal(g.client.state, 'reconnecting');
  assert.deepEqual(g.of('close'), [{ code: 1006, reason: '', willReconnect: true }]);
  g.client.close();
});
