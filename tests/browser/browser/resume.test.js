'use strict';
// Reconnect and resume in a real browser: connections are cut from the server side while the
// gateway keeps running (a restart would lose its history), messages are published meanwhile,
// and every one of them must arrive exactly once after the client is back.
//
// Mechanisms:
// - a TCP proxy (lib/proxy.js) between Chromium and the gateway: `down()` destroys every live
//   connection (WebSocket, SSE stream, held poll) and refuses new ones until `up()`;
// - Playwright's routeWebSocket as a WebSocket proxy whose server side the test closes, and which
//   then refuses new WebSockets, so that the client has to move to SSE.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, publish } = require('../lib/gateway');
const { TcpProxy } = require('../lib/proxy');
const { launch, clientPage, established, waitForMessages, sleep, uniqueTopic } = require('../lib/browser');

let gw;
let small;
let browser;

before(async () => {
  [gw, small, browser] = await Promise.all([
    startGateway(),
    startGateway(['--retention-messages', '3']),
    launch(),
  ]);
});

after(async () => {
  if (browser) await browser.close();
  await Promise.all([gw && gw.stop(), small && small.stop()]);
});

const FAST = { timeouts: { connect: 3000 }, reconnect: { min: 100, max: 600 } };

async function messages(page) { return page.evaluate(() => window.log.messages.map((m) => m.id)); }

// Waits for `ids` and then a little longer, to catch duplicates arriving late.
async function expectExactly(page, ids) {
  await waitForMessages(page, ids.length, 20000);
  await sleep(300);
  assert.deepEqual(await messages(page), ids);
}

for (const transport of ['ws', 'sse', 'poll', 'auto']) {
  test(`${transport}: connections cut by the network, messages published meanwhile arrive exactly once`, async () => {
    const proxy = await new TcpProxy(gw.port).listen();
    const context = await browser.newContext();
    try {
      const topics = [uniqueTopic('a'), uniqueTopic('b')];
      const options = transport === 'auto' ? FAST : Object.assign({ transports: [transport] }, FAST);
      const page = await clientPage(context, proxy.url, { topics, options });
      await established(page);
      const first = await page.evaluate(() => window.sb.transport);
      if (transport !== 'auto') assert.equal(first, transport);
      const sent = [];
      const send = async (i, data) => { const topic = topics[i % 2]; sent.push({ topic, id: await publish(gw.url, topic, data) }); };
      for (let i = 0; i < 4; i++) await send(i, { before: i });
      await waitForMessages(page, 4);

      const cut = proxy.down();
      assert.ok(cut >= 1, 'there were connections to cut');
      await page.waitForFunction(() => window.sb.state === 'reconnecting', null, { timeout: 10000 });
      for (let i = 0; i < 6; i++) await send(i, { during: i });
      // the page publishes too: queued until a transport is back
      await page.evaluate((topic) => {
        window.queued = [];
        window.sb.publish(topic, { queued: true }, function (err, id) { window.queued.push(err ? 'error: ' + err.code : id); });
      }, topics[0]);
      await sleep(700); // the client keeps failing against the refusing proxy meanwhile
      assert.deepEqual(await page.evaluate(() => window.queued), [], 'still queued');
      proxy.up();

      await established(page, 20000);
      await page.waitForFunction(() => window.queued.length === 1, null, { timeout: 10000 });
      const queuedId = (await page.evaluate(() => window.queued))[0];
      assert.match(queuedId, /^[A-Za-z0-9-]+$/, 'the queued publish was accepted');
      sent.push({ topic: topics[0], id: queuedId });
      for (let i = 0; i < 2; i++) await send(i, { after: i });
      await expectExactlySet(page, sent.map((s) => s.id));
      // per-topic order is what the protocol promises
      const got = await page.evaluate(() => window.log.messages);
      for (const t of topics) {
        assert.deepEqual(got.filter((m) => m.topic === t).map((m) => m.id), sent.filter((m) => m.topic === t).map((m) => m.id), `order in ${t}`);
      }
      const log = await page.evaluate(() => window.log);
      assert.ok(log.states.includes('reconnecting'), JSON.stringify(log.states));
      assert.deepEqual(log.resets, []);
      if (transport !== 'auto') assert.deepEqual([...new Set(log.transports)], [transport]);
    } finally {
      await context.close();
      await proxy.close();
    }
  });
}

// Every id exactly once (any interleaving across topics).
async function expectExactlySet(page, ids) {
  await waitForMessages(page, ids.length, 20000);
  await sleep(300);
  const got = await messages(page);
  assert.equal(got.length, ids.length, `expected ${ids.length} messages, got ${got.length}: ${JSON.stringify(got)}`);
  assert.deepEqual([...got].sort(), [...ids].sort());
}

test('WebSocket cut from the server side and then blocked: the client resumes on SSE without loss', async () => {
  const context = await browser.newContext();
  try {
    const topic = uniqueTopic();
    let blocked = false;
    const servers = [];
    const page = await clientPage(context, gw.url, {
      topics: [topic], options: FAST,
      setup: (page) => page.routeWebSocket(/\/ws/, (ws) => {
        if (blocked) { ws.close(); return; }
        servers.push({ page: ws, server: ws.connectToServer() }); // forwards frames both ways
      }),
    });
    await established(page);
    assert.equal(await page.evaluate(() => window.sb.transport), 'ws');
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(await publish(gw.url, topic, i));
    await waitForMessages(page, 3);

    blocked = true;
    // Closing our end towards the gateway is not forwarded to the page, so close both ends.
    for (const s of servers) {
      s.server.close({ code: 1000, reason: 'cut by test' });
      s.page.close({ code: 1011, reason: 'cut by test' });
    }
    for (let i = 3; i < 8; i++) ids.push(await publish(gw.url, topic, i));
    await page.waitForFunction(() => window.sb.transport === 'sse' && window.sb.state === 'open', null, { timeout: 15000 });
    for (let i = 8; i < 10; i++) ids.push(await publish(gw.url, topic, i));
    await expectExactly(page, ids);
    const log = await page.evaluate(() => window.log);
    assert.deepEqual(log.transports, ['ws', 'sse']);
    assert.ok(log.states.includes('reconnecting'));
  } finally {
    await context.close();
  }
});

test('a position lost to retention reaches the app as a reset, then delivery goes on', async () => {
  const proxy = await new TcpProxy(small.port).listen();
  const context = await browser.newContext();
  try {
    const topic = uniqueTopic();
    const page = await clientPage(context, proxy.url, { topics: [topic], options: Object.assign({ transports: ['ws'] }, FAST) });
    await established(page);
    const first = await publish(small.url, topic, 'seen');
    await waitForMessages(page, 1);
    proxy.down();
    await page.waitForFunction(() => window.sb.state === 'reconnecting', null, { timeout: 10000 });
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await publish(small.url, topic, i)); // only the last 3 are retained
    proxy.up();
    await waitForMessages(page, 4, 20000);
    await sleep(300);
    const log = await page.evaluate(() => window.log);
    assert.deepEqual(log.resets, [{ topic, reason: 'retention' }]);
    assert.deepEqual(log.messages.map((m) => m.id), [first, ...ids.slice(3)]);
  } finally {
    await context.close();
    await proxy.close();
  }
});
