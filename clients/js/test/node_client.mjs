// WsbeatClient instances in Node, driven line by line (run by tests/js_client.rs):
//
//   node --experimental-websocket node_client.mjs
//
// Stdin, one JSON command per line:
//   {"cmd":"new","client":"a","url":"ws://...","options":{...}}  a new client
//   {"cmd":"send","client":"a","data":"..."}                       client.send
//   {"cmd":"close","client":"a"}                                   client.close
// Stdout, one JSON object per line: {"event":"ready"} at start, then each
// client's events, {"client":"a","event":"open"|"message"|"close"|"state",...},
// and {"event":"error","error":...} for a bad command. When stdin closes
// every client is closed and the script exits.

import { createInterface } from 'node:readline';
import { WsbeatClient } from '../wsbeat-client.mjs';

const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const clients = new Map();

function watch(name, c) {
  c.on('open', () => print({ client: name, event: 'open' }));
  c.on('state', (state) => print({ client: name, event: 'state', state }));
  c.on('message', (data) =>
    print({ client: name, event: 'message', data: typeof data === 'string' ? data : `(binary ${data.byteLength})` }),
  );
  c.on('close', (e) => print({ client: name, event: 'close', ...e }));
}

function run(cmd) {
  switch (cmd.cmd) {
    case 'new': {
      const c = new WsbeatClient(cmd.url, cmd.options ?? {});
      clients.set(cmd.client, c);
      watch(cmd.client, c);
      break;
    }
    case 'send':
      print({ client: cmd.client, event: 'sent', ok: clients.get(cmd.client).send(cmd.data) });
      break;
    case 'close':
      clients.get(cmd.client).close();
      break;
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  try {
    run(JSON.parse(line));
  } catch (e) {
    print({ event: 'error', error: String(e?.stack ?? e) });
  }
});
lines.on('close', () => {
  for (const c of clients.values()) c.close();
  // Sockets still closing would keep the process a while; nothing is left to say.
  setTimeout(() => process.exit(0), 200).unref();
});
print({ event: 'ready' });
