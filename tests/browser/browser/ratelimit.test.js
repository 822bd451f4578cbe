'use strict';
// The browser client against a gateway with a connect rate, in headless Chromium: a client
// refused for its address's rate reads Retry-After from the real answer, waits for it, and then
// connects on the best transport (none was demoted) and gets what is published.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, publish } = require('../lib/gateway');
const { launch, clientPage, established, waitForMessages, uniqueTopic } = require('../lib/browser');

let gw;
let browser;

before(async () => {
  // One subscribe request (WebSocket handshake, SSE stream or poll) per second per address.
  [gw, browser] = await Promise.all([startGateway(['--connect-rate', '1/s', '--connect-burst', '1']), launch()]);
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
});

test('a client refused for the connect rate waits for Retry-After, then connects on WebSocket', async () => {
  const context = await browser.newContext();
  try {
    const topic = uniqueTopic('limited');
    // The first client takes the address's one request of this second.
    const page = await clientPage(context, gw.url, { topics: [topic], options: { transports: ['ws'] } });
    await established(page);
    // A second one at once: its handshake, stream and poll are refused; only the poll's answer
    // (429, Retry-After) is readable by a script.
    await page.evaluate((topic) => {
      var log = window.second = { errors: [], opens: [], messages: [] };
      var sb = window.sb2 = Switchboard.connect('', { reconnect: { min: 100, max: 600 }, timeouts: { connect: 3000 } });
      sb.on('error', function (e) {
        log.errors.push({ code: e.code, transport: e.transport || null, retryAfter: e.retryAfter, at: Date.now() });
      });
      sb.on('state', function (s) { if (s === 'open') { log.opens.push({ transport: sb.transport, at: Date.now() }); } });
      sb.subscribe(topic, function (data, m) { log.messages.push(m.id); });
    }, topic);
    await page.waitForFunction(() => window.second.opens.length > 0, null, { timeout: 20000, polling: 50 });
    const second = await page.evaluate(() => window.second);
    const limited = second.errors.filter((e) => e.code === 'rate_limited');
    assert.ok(limited.length >= 1, JSON.stringify(second.errors));
    assert.equal(limited[0].transport, 'poll', JSON.stringify(second.errors));
    assert.ok(Number.isInteger(limited[0].retryAfter) && limited[0].retryAfter >= 1, JSON.stringify(limited[0]));
    const lastRefusal = limited[limited.length - 1];
    assert.ok(second.opens[0].at - lastRefusal.at >= lastRefusal.retryAfter * 1000 - 20,
      `opened ${second.opens[0].at - lastRefusal.at} ms after being told to wait ${lastRefusal.retryAfter} s`);
    assert.equal(second.opens[0].transport, 'ws', 'the best transport, not demoted');

    const id = await publish(gw.url, topic, 'after the wait');
    await page.waitForFunction(() => window.second.messages.length > 0, null, { timeout: 15000, polling: 50 });
    await waitForMessages(page, 1);
    assert.deepEqual(await page.evaluate(() => window.second.messages), [id]);
  } finally {
    await context.close();
  }
});
