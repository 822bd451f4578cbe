'use strict';
// The dashboard as an operator sees it: live numbers that move while messages flow, on a phone
// and on a laptop, fed by the SSE stats stream or, when that is blocked, by polling.
// With DASHBOARD_SCREENSHOT=path it also saves a screenshot taken with traffic flowing
// (docs/dashboard.png is made so, see docs/ADMIN.md).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, publish } = require('../lib/gateway');
const { launch, watchErrors, uniqueTopic } = require('../lib/browser');

let gw;
let browser;

before(async () => {
  [gw, browser] = await Promise.all([startGateway(), launch()]);
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
});

// An SSE subscriber in this process, reading until aborted, so that deliveries flow.
function subscribe(topic) {
  const controller = new AbortController();
  const done = fetch(`${gw.url}/events?topic=${topic}`, { signal: controller.signal })
    .then(async (response) => { for await (const _ of response.body) { /* read on */ } })
    .catch(() => {});
  return { stop: () => { controller.abort(); return done; } };
}

// Publishes to `topics` every 50 ms until stopped.
function traffic(topics) {
  let running = true;
  const done = (async () => {
    for (let n = 0; running; n++) {
      await Promise.all(topics.map((t, i) => (n % (i + 1) === 0 ? publish(gw.url, t, { n }) : null)));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return { stop: () => { running = false; return done; } };
}

const number = (page, id) => page.$eval(`#${id}`, (el) => Number(el.textContent.replace(/,/g, '')));

async function watch(viewport, { blockStream = false } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = watchErrors(page);
  if (blockStream) await page.route('**/admin/stream', (route) => route.abort());
  await page.goto(`${gw.url}/dashboard`);
  assert.equal(await page.title(), 'Switchboard dashboard');
  const expected = blockStream ? 'polling /admin/stats' : 'live (SSE)';
  await page.waitForFunction((s) => document.getElementById('status').textContent === s, expected, { timeout: 10000 });
  return { context, page, errors };
}

async function numbersMove(page, topic) {
  // Rates are differences of totals between snapshots, so they move only while messages flow.
  await page.waitForFunction(() => Number(document.getElementById('rate-in').textContent) > 0
    && Number(document.getElementById('rate-out').textContent.replace(/,/g, '')) > 0, null, { timeout: 10000 });
  await page.waitForFunction((t) => [...document.querySelectorAll('#topics td:first-child')]
    .some((td) => td.textContent === t), topic, { timeout: 10000 });
  assert.ok(await number(page, 'connections') >= 2, 'the subscribers are counted');
  assert.ok(await number(page, 'conn-sse') >= 2, 'as SSE streams');
  const row = await page.$$eval('#topics tr', (rows, t) => rows.map((r) => [...r.cells].map((c) => c.textContent))
    .find((cells) => cells[0] === t), topic);
  assert.equal(row[3], '2', 'the busiest topic shows its two SSE subscribers');
  await page.waitForFunction(() => Number(document.getElementById('chart').dataset.points) >= 2, null, { timeout: 10000 });
}

test('the numbers move while messages flow, on a phone and on a laptop', async () => {
  const busy = uniqueTopic('busy');
  const quiet = uniqueTopic('quiet');
  const subscribers = [subscribe(busy), subscribe(busy), subscribe(quiet)];
  const flow = traffic([busy, quiet]);
  try {
    for (const viewport of [{ width: 390, height: 844 }, { width: 1280, height: 900 }]) {
      const { context, page, errors } = await watch(viewport);
      await numbersMove(page, busy);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px at ${viewport.width}px`);
      if (viewport.width > 1000 && process.env.DASHBOARD_SCREENSHOT) {
        // A minute of chart first, so that the topics' rates (over the last minute) have settled.
        await page.waitForFunction(() => Number(document.getElementById('chart').dataset.points) >= 65, null, { timeout: 90000 });
        await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
      }
      assert.deepEqual(errors, []);
      await context.close();
    }
  } finally {
    await flow.stop();
    await Promise.all(subscribers.map((s) => s.stop()));
  }
});

test('without the stream the page falls back to polling and still moves', async () => {
  const busy = uniqueTopic('busy');
  const subscribers = [subscribe(busy), subscribe(busy)];
  const flow = traffic([busy]);
  try {
    const { context, page } = await watch({ width: 1024, height: 768 }, { blockStream: true });
    await numbersMove(page, busy);
    await context.close();
  } finally {
    await flow.stop();
    await Promise.all(subscribers.map((s) => s.stop()));
  }
});
