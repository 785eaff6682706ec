/**
 * MQTT over WebSocket from a real browser (issue 15): headless Chromium (Debian's `chromium`,
 * which .ci/run installs) opens a page this test serves, which loads MQTT.js's browser bundle from
 * node_modules (nothing from the network), subscribes and publishes over ws:// and wss://; a TCP
 * client on the other side checks what the page published, and the page what it was sent. The
 * listener allows the page's origin only. Without Chromium the test fails: it never skips.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { makeTlsFixture, type TlsFixture } from '../helpers/tls-fixture.js';

const CHROMIUM = '/usr/bin/chromium';
const require = createRequire(import.meta.url);
const bundle = readFileSync(join(dirname(require.resolve('mqtt/package.json')), 'dist', 'mqtt.min.js'));

/** The page: connects to `broker`, subscribes to browser/in, then publishes on browser/out; `window.received` collects messages. */
function page(broker: string): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>MQTT over WebSocket</title><script src="/mqtt.min.js"></script></head>
<body><p id="state">connecting</p><ul id="messages"></ul>
<script>
  window.received = [];
  const client = mqtt.connect(${JSON.stringify(broker)}, { clientId: 'browser-page', reconnectPeriod: 0 });
  client.on('error', (error) => { document.getElementById('state').textContent = 'error: ' + error.message; });
  client.on('connect', () => {
    client.subscribe('browser/in', { qos: 1 }, (error) => {
      if (error) { document.getElementById('state').textContent = 'subscribe failed'; return; }
      client.publish('browser/out', 'hello from the browser', { qos: 1 }, () => {
        document.getElementById('state').textContent = 'subscribed and published';
      });
    });
  });
  client.on('message', (topic, payload) => {
    window.received.push(topic + ' ' + payload.toString());
    const item = document.createElement('li');
    item.textContent = topic + ': ' + payload.toString();
    document.getElementById('messages').appendChild(item);
  });
</script></body></html>`;
}

let web: Server;
let webOrigin: string;
let browser: Browser;
let fixture: TlsFixture;
let running: RunningBroker;
let wsPort: number;
let wssPort: number;
let tcp: MqttClient;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)`);
  fixture = makeTlsFixture();
  // The page's broker address travels in its query string; the bundle is served from node_modules.
  web = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (url.pathname === '/mqtt.min.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' });
      response.end(bundle);
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(page(url.searchParams.get('broker') ?? ''));
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  webOrigin = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;
  running = await startBroker({
    sysInterval: 0,
    listeners: [
      { host: '127.0.0.1', port: 0 },
      { host: '127.0.0.1', port: 0, websocket: true, allowedOrigins: [webOrigin] },
      { host: '127.0.0.1', port: 0, websocket: true, allowedOrigins: [webOrigin], tls: { cert: fixture.server.cert, key: fixture.server.key } },
    ],
  });
  [, wsPort, wssPort] = running.broker.addresses().map(({ port }) => port) as [number, number, number];
  tcp = await mqtt.connectAsync(`mqtt://127.0.0.1:${running.port}`, { clientId: 'tcp-side', reconnectPeriod: 0 });
  await tcp.subscribeAsync('browser/out', { qos: 1 });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // As root, Chromium needs --no-sandbox; the others keep it off this machine's closed network.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  await browser?.close();
  await tcp?.endAsync(true);
  await running?.stop();
  await new Promise((resolve) => web?.close(resolve));
  fixture?.remove();
});

describe('MQTT over WebSocket from headless Chromium', () => {
  it.each(['ws', 'wss'] as const)('%s: the page subscribes and publishes; the TCP side gets its message and the page gets the TCP side’s', async (scheme) => {
    // The test CA is not the browser's: its certificate errors are ignored for wss.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    try {
      const tab = await context.newPage();
      const fromPage = new Promise<string>((resolve) => tcp.once('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)));
      const broker = `${scheme}://127.0.0.1:${scheme === 'ws' ? wsPort : wssPort}/mqtt`;
      await tab.goto(`${webOrigin}/?broker=${encodeURIComponent(broker)}`);
      // Evaluated in the page (a string: this file is not compiled against the DOM).
      await tab.waitForFunction("document.getElementById('state').textContent === 'subscribed and published'");
      expect(await fromPage).toBe('browser/out hello from the browser');
      await tcp.publishAsync('browser/in', `hello over ${scheme}`, { qos: 1 });
      await tab.waitForFunction('window.received.length > 0');
      expect(await tab.evaluate('window.received')).toEqual([`browser/in hello over ${scheme}`]);
      expect(await tab.textContent('#messages')).toBe(`browser/in: hello over ${scheme}`);
    } finally {
      await context.close();
    }
  });
});
