// Headless Chromium as a wsbeat client over wss:// (run by tests/browser_tls.rs):
// a page opens the WebSocket, names itself with heartbeats, waits for one
// server text heartbeat and for one pushed message, then closes with 1000.
//
//   node wss_heartbeat_push.mjs --url wss://localhost:PORT/ --cert cert.pem --id browser-1
//
// The certificate is trusted by its key alone (Chromium's
// --ignore-certificate-errors-spki-list), not by turning checks off: any
// other certificate still fails the handshake.
//
// Stdout, one JSON object per line: {"event":"heartbeat-sent"} once the first
// heartbeat is on its way (the caller then waits for the id to be listed and
// pushes), then {"event":"done", ...} with what the page saw. A failure prints
// {"event":"error","error":...} and exits 1. Whatever happens the browser is
// closed before exiting: at --timeout-ms, and when stdin closes (the caller
// gave up or died), too.

import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    cert: { type: 'string' },
    id: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    'heartbeat-ms': { type: 'string', default: '200' },
    'timeout-ms': { type: 'string', default: '30000' },
  },
});
for (const name of ['url', 'cert', 'id']) {
  if (!opt[name]) {
    console.error(`usage: node wss_heartbeat_push.mjs --url wss://localhost:PORT/ --cert PEM --id ID [--chromium PATH] [--heartbeat-ms N] [--timeout-ms N]`);
    process.exit(2);
  }
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

// base64(SHA-256(SubjectPublicKeyInfo)): the form Chromium's SPKI list takes.
function spkiHash(pemPath) {
  const spki = new X509Certificate(readFileSync(pemPath)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

let browser = null;
let finishing = false;
async function finish(code, report) {
  if (finishing) return;
  finishing = true;
  print(report);
  // close() also ends Chromium's process group and removes its profile dir.
  if (browser) await browser.close().catch(() => {});
  process.exit(code);
}
const fail = (error) => finish(1, { event: 'error', error: String(error?.stack ?? error) });

setTimeout(() => fail(`no result within ${opt['timeout-ms']} ms`), Number(opt['timeout-ms'])).unref();
process.stdin.on('end', () => fail('stdin closed: the caller gave up'));
process.stdin.on('error', () => fail('stdin closed: the caller gave up'));
process.stdin.resume();

async function main() {
  browser = await chromium.launch({
    executablePath: opt.chromium,
    headless: true,
    // Playwright runs Chromium with its own new, empty --user-data-dir (which
    // the SPKI list needs to be honoured) and without the sandbox, which
    // Chromium refuses to run as root.
    chromiumSandbox: false,
    args: [
      `--ignore-certificate-errors-spki-list=${spkiHash(opt.cert)}`,
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = await browser.newPage();
  page.on('pageerror', (e) => fail(`page error: ${e}`));

  // Step 1: open, and send the first heartbeat (then one every heartbeat-ms).
  await page.evaluate(
    ({ url, id, heartbeatMs }) =>
      new Promise((resolve, reject) => {
        const st = (window.wsbeat = { messages: [], serverHeartbeats: 0, heartbeatsSent: 0, close: null });
        const ws = (st.ws = new WebSocket(url));
        const beat = () => {
          ws.send(`heartbeat ${id}`);
          st.heartbeatsSent++;
        };
        ws.onopen = () => {
          beat();
          st.timer = setInterval(beat, heartbeatMs);
          resolve();
        };
        ws.onmessage = (e) => {
          if (e.data === 'heartbeat') st.serverHeartbeats++;
          else st.messages.push(typeof e.data === 'string' ? e.data : `(binary ${e.data})`);
        };
        ws.onclose = (e) => {
          clearInterval(st.timer);
          st.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
          reject(new Error(`closed before it opened: ${JSON.stringify(st.close)}`));
        };
      }),
    { url: opt.url, id: opt.id, heartbeatMs: Number(opt['heartbeat-ms']) },
  );
  print({ event: 'heartbeat-sent' });

  // Step 2: one pushed message and one server heartbeat, then a clean close.
  const seen = await page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const st = window.wsbeat;
        const ws = st.ws;
        const check = () => {
          if (st.close) return reject(new Error(`closed by the server: ${JSON.stringify(st.close)}`));
          if (st.messages.length === 0 || st.serverHeartbeats === 0) return;
          clearInterval(poll);
          clearInterval(st.timer);
          ws.onclose = (e) => {
            st.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
            resolve({
              messages: st.messages,
              serverHeartbeats: st.serverHeartbeats,
              heartbeatsSent: st.heartbeatsSent,
              close: st.close,
              userAgent: navigator.userAgent,
            });
          };
          ws.close(1000, 'done');
        };
        const poll = setInterval(check, 10);
      }),
  );
  await finish(0, { event: 'done', ...seen });
}

main().catch(fail);
