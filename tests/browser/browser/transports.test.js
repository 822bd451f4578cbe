'use strict';
// Transport selection and fallback in a real browser against a real gateway.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, publish } = require('../lib/gateway');
const { launch, clientPage, established, waitForMessages, pagePublish, uniqueTopic, sleep } = require('../lib/browser');

let gw;
let browser;

before(async () => {
  gw = await startGateway();
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
});

const FAST = { timeouts: { connect: 3000 }, reconnect: { min: 100, max: 1000 } };

test('demo pages forced to ws, sse and poll exchange messages both ways', async () => {
  const context = await browser.newContext();
  const room = uniqueTopic('room');
  const pages = {};
  for (const t of ['ws', 'sse', 'poll']) {
    const page = await context.newPage();
    page.errors = [];
    page.on('console', (m) => { if (m.type() === 'error') page.errors.push(m.text()); });
    page.on('pageerror', (e) => page.errors.push(e.message));
    await page.goto(`${gw.url}/?transport=${t}&room=${room}&name=${t}-user`);
    pages[t] = page;
  }
  for (const t of Object.keys(pages)) {
    await pages[t].waitForFunction(() => document.getElementById('state').textContent === 'open', null, { timeout: 15000 });
    assert.equal(await pages[t].textContent('#transport'), t);
    assert.equal(await pages[t].evaluate(() => window.switchboardDemo.client.transport), t);
  }
  for (const t of Object.keys(pages)) {
    await pages[t].fill('#text', `hello from ${t}`);
    await pages[t].press('#text', 'Enter');
    // wait for the sender's own copy, so the three messages have a known order
    await pages[t].waitForFunction((t) => [].some.call(document.querySelectorAll('#log li.chat .msg'),
      (el) => el.textContent === `hello from ${t}`), t, { timeout: 10000 });
  }
  for (const t of Object.keys(pages)) {
    await pages[t].waitForFunction(() => document.querySelectorAll('#log li.chat').length >= 3, null, { timeout: 15000 });
    const rows = await pages[t].$$eval('#log li.chat', (lis) => lis.map((li) => ({
      text: li.querySelector('.msg').textContent, via: li.querySelector('.via').textContent, me: li.classList.contains('me'),
    })));
    assert.deepEqual(rows.map((r) => r.text), ['hello from ws', 'hello from sse', 'hello from poll'], `page ${t}`);
    assert.deepEqual(rows.map((r) => r.via), ['ws', 'sse', 'poll'], `page ${t}`);
    assert.deepEqual(rows.map((r) => r.me), ['ws', 'sse', 'poll'].map((s) => s === t), `page ${t}`);
    assert.deepEqual(pages[t].errors, [], `console errors on page ${t}`);
  }
  await context.close();
});

test('without window.WebSocket the client lands on SSE', async () => {
  const context = await browser.newContext();
  const topic = uniqueTopic();
  const page = await clientPage(context, gw.url, {
    topics: [topic], options: FAST,
    init: () => { delete window.WebSocket; },
  });
  await established(page);
  assert.equal(await page.evaluate(() => typeof window.WebSocket), 'undefined');
  assert.equal(await page.evaluate(() => window.sb.transport), 'sse');
  const id = await publish(gw.url, topic, { n: 1 });
  const own = await pagePublish(page, topic, { n: 2 });
  assert.ok(own.id, JSON.stringify(own));
  await waitForMessages(page, 2);
  const got = await page.evaluate(() => window.log.messages);
  assert.deepEqual(got.map((m) => m.data), [{ n: 1 }, { n: 2 }]);
  assert.equal(got[0].id, id);
  assert.equal(got[1].id, own.id);
  assert.deepEqual(await page.evaluate(() => window.log.transports), ['sse']);
  await context.close();
});

test('without WebSocket and EventSource the client lands on long-poll', async () => {
  const context = await browser.newContext();
  const topic = uniqueTopic();
  const page = await clientPage(context, gw.url, {
    topics: [topic], options: FAST,
    init: () => { delete window.WebSocket; delete window.EventSource; },
  });
  await established(page);
  assert.equal(await page.evaluate(() => window.sb.transport), 'poll');
  await publish(gw.url, topic, 'from http');
  const own = await pagePublish(page, topic, 'from page');
  assert.ok(own.id, JSON.stringify(own));
  await waitForMessages(page, 2);
  assert.deepEqual(await page.evaluate(() => window.log.messages.map((m) => m.data)), ['from http', 'from page']);
  await context.close();
});

test('an SSE stream that never answers (a buffering proxy) falls back to long-poll', async () => {
  const context = await browser.newContext();
  const topic = uniqueTopic();
  const held = [];
  // Swallow the event stream: the request is never answered, as behind a buffering proxy.
  await context.route(/\/events\?/, (route) => { if (route.request().method() === 'GET') held.push(route); else route.continue(); });
  const page = await clientPage(context, gw.url, {
    topics: [topic], options: { timeouts: { connect: 1500 }, reconnect: { min: 100, max: 1000 } },
    init: () => { delete window.WebSocket; },
  });
  await established(page);
  assert.equal(await page.evaluate(() => window.sb.transport), 'poll');
  assert.ok(held.length >= 1, 'the SSE request was made');
  const log = await page.evaluate(() => window.log);
  assert.deepEqual(log.transports, ['sse', 'poll']);
  assert.ok(log.errors.includes('connect_timeout@sse'), JSON.stringify(log.errors));
  await publish(gw.url, topic, 1);
  await waitForMessages(page, 1);
  await context.close();
});

test('a WebSocket refused by the network falls back to SSE and loses nothing', async () => {
  const context = await browser.newContext();
  const topic = uniqueTopic();
  let refused = 0;
  const page = await clientPage(context, gw.url, {
    topics: [topic], options: FAST,
    // Every WebSocket is answered by Playwright and closed at once: the gateway never sees it.
    setup: (page) => page.routeWebSocket(/\/ws/, (ws) => { refused++; ws.close(); }),
  });
  await established(page);
  assert.ok(refused >= 1);
  assert.equal(await page.evaluate(() => window.sb.transport), 'sse');
  const log = await page.evaluate(() => window.log);
  assert.deepEqual(log.transports, ['ws', 'sse']);
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push(await publish(gw.url, topic, i));
  await waitForMessages(page, 5);
  assert.deepEqual(await page.evaluate(() => window.log.messages.map((m) => m.id)), ids);
  await context.close();
});

for (const transport of ['ws', 'sse', 'poll']) {
  test(`${transport}: subscribing and unsubscribing while connected`, async () => {
    const context = await browser.newContext();
    const a = uniqueTopic('a');
    const b = uniqueTopic('b');
    const page = await clientPage(context, gw.url, { topics: [a], options: Object.assign({ transports: [transport] }, FAST) });
    await established(page);
    const before = await page.evaluate(() => window.log.subscribed);
    const a1 = await publish(gw.url, a, 'a1');
    await waitForMessages(page, 1);
    await page.evaluate((b) => { window.sb.subscribe(b, function (d, m) { window.log.messages.push(m); }); }, b);
    await page.waitForFunction((n) => window.log.subscribed > n, before, { timeout: 10000 });
    await established(page);
    const b1 = await publish(gw.url, b, 'b1');
    const a2 = await publish(gw.url, a, 'a2');
    await waitForMessages(page, 3);
    await page.evaluate((a) => { window.sb.unsubscribe(a); }, a);
    await sleep(200);
    await publish(gw.url, a, 'a3'); // not delivered any more
    const b2 = await publish(gw.url, b, 'b2');
    await waitForMessages(page, 4);
    await sleep(300);
    const got = await page.evaluate(() => window.log.messages);
    assert.deepEqual(got.filter((m) => m.topic === a).map((m) => m.id), [a1, a2]);
    assert.deepEqual(got.filter((m) => m.topic === b).map((m) => m.id), [b1, b2]);
    assert.equal(got.length, 4);
    const log = await page.evaluate(() => window.log);
    assert.deepEqual(log.states, ['open'], 'stays open throughout');
    assert.deepEqual(log.errors, []);
    await context.close();
  });
}

test('once the WebSocket works again the client moves back to it, losing nothing', async () => {
  const context = await browser.newContext();
  const topic = uniqueTopic();
  let blocked = true;
  const page = await clientPage(context, gw.url, {
    topics: [topic], options: { timeouts: { connect: 3000 }, reconnect: { min: 100, max: 1000, retryBetter: 1500 } },
    setup: (page) => page.routeWebSocket(/\/ws/, (ws) => { if (blocked) ws.close(); else ws.connectToServer(); }),
  });
  await established(page);
  assert.equal(await page.evaluate(() => window.sb.transport), 'sse');
  const ids = [await publish(gw.url, topic, 0)];
  await waitForMessages(page, 1);
  blocked = false;
  // published while the client switches back
  const t0 = Date.now();
  while (Date.now() - t0 < 2500) { ids.push(await publish(gw.url, topic, ids.length)); await sleep(100); }
  await page.waitForFunction(() => window.sb.transport === 'ws' && window.sb.state === 'open', null, { timeout: 10000 });
  ids.push(await publish(gw.url, topic, 'last'));
  await waitForMessages(page, ids.length);
  await sleep(300);
  assert.deepEqual(await page.evaluate(() => window.log.messages.map((m) => m.id)), ids);
  assert.deepEqual(await page.evaluate(() => window.log.transports), ['ws', 'sse', 'ws']);
  await context.close();
});
