// WsbeatClient (clients/js/wsbeat-client.mjs) in headless Chromium, one page
// ("tab") per client, driven line by line (run by tests/js_client.rs):
//
//   node js_client.mjs [--chromium /usr/bin/chromium] [--timeout-ms N]
//
// The same line protocol as clients/js/test/node_client.mjs: stdin takes
// {"cmd":"new"|"send"|"close","client":NAME,...}; stdout gets
// {"event":"ready"} once the browser is up, then each client's events as
// {"client":NAME,"event":...}. Each page is about:blank with the module added
// as an inline module script (a page served from a made-up origin would
// count as public, and Chromium's local-network-access checks would refuse
// its WebSocket to 127.0.0.1); any HTTP request from a page is aborted and
// reported as {"event":"blocked"}. A failure prints
// {"event":"error","error":...} and exits 1. The browser is closed before
// exiting: at --timeout-ms, and when stdin closes.

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '120000' },
  },
});

// `export` is allowed in an inline module script; the page reaches the
// class through window.
const MODULE =
  readFileSync(new URL('../../clients/js/wsbeat-client.mjs', import.meta.url), 'utf8') +
  '\nwindow.WsbeatClient = WsbeatClient;\n';
const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

let browser = null;
let finishing = false;
async function finish(code, report) {
  if (finishing) return;
  finishing = true;
  if (report) print(report);
  if (browser) await browser.close().catch(() => {});
  process.exit(code);
}
const fail = (error) => finish(1, { event: 'error', error: String(error?.stack ?? error) });
setTimeout(() => fail(`still running after ${opt['timeout-ms']} ms`), Number(opt['timeout-ms'])).unref();

const pages = new Map();

async function newClient(context, name, url, options) {
  const page = await context.newPage();
  pages.set(name, page);
  page.on('pageerror', (e) => fail(`page error in ${name}: ${e}`));
  await page.exposeFunction('report', (obj) => print({ client: name, ...obj }));
  await page.addScriptTag({ content: MODULE, type: 'module' });
  await page.waitForFunction(() => typeof window.WsbeatClient === 'function');
  await page.evaluate(
    ({ url, options }) => {
      const c = (window.client = new window.WsbeatClient(url, options));
      c.on('open', () => window.report({ event: 'open' }));
      c.on('state', (state) => window.report({ event: 'state', state }));
      c.on('message', (data) =>
        window.report({ event: 'message', data: typeof data === 'string' ? data : `(binary ${data.byteLength})` }),
      );
      c.on('close', (e) => window.report({ event: 'close', ...e }));
    },
    { url, options },
  );
}

async function main() {
  browser = await chromium.launch({
    executablePath: opt.chromium,
    headless: true,
    // Playwright gives Chromium a new, empty --user-data-dir; no sandbox,
    // which Chromium refuses to run as root.
    chromiumSandbox: false,
    args: [
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext();
  // The client needs nothing over HTTP: any request is refused, and said so.
  await context.route('**/*', (route) => {
    print({ event: 'blocked', url: route.request().url() });
    return route.abort();
  });

  // One command at a time, in order.
  let chain = Promise.resolve();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    chain = chain.then(async () => {
      const cmd = JSON.parse(line);
      switch (cmd.cmd) {
        case 'new':
          await newClient(context, cmd.client, cmd.url, cmd.options ?? {});
          break;
        case 'send': {
          const ok = await pages.get(cmd.client).evaluate((d) => window.client.send(d), cmd.data);
          print({ client: cmd.client, event: 'sent', ok });
          break;
        }
        case 'close':
          await pages.get(cmd.client).evaluate(() => window.client.close());
          break;
        default:
          throw new Error(`unknown command ${cmd.cmd}`);
      }
    }).catch(fail);
  });
  lines.on('close', () => {
    chain.then(() => finish(0));
  });
  print({ event: 'ready', userAgent: await browser.version() });
}

main().catch(fail);
