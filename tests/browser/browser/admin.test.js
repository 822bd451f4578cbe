'use strict';
// The browser client and the admin API: deleting a topic's history reaches a page on every
// transport as a `deleted` reset, and the page goes on with the new history.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, publish } = require('../lib/gateway');
const { launch, clientPage, established, waitForMessages, uniqueTopic } = require('../lib/browser');

let gw;
let browser;

before(async () => {
  [gw, browser] = await Promise.all([startGateway(), launch()]);
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
});

// Asks the admin API until `ready` holds of its reply.
async function waitForAdmin(path, ready, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const reply = await (await fetch(`${gw.url}${path}`)).json();
    if (ready(reply)) return reply;
    if (Date.now() > deadline) throw new Error(`${path} never got there: ${JSON.stringify(reply)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const transport of ['ws', 'sse', 'poll']) {
  test(`a deleted topic resets a ${transport} page, which goes on with the new history`, async () => {
    const context = await browser.newContext();
    const topic = uniqueTopic('doomed');
    const page = await clientPage(context, gw.url, { topics: [topic], options: { transports: [transport] } });
    await established(page);
    await publish(gw.url, topic, 'old');
    await waitForMessages(page, 1);
    // Connected now (a poll: held again after the message), so the reset comes at once.
    await waitForAdmin(`/admin/connections?topic=${topic}`, (r) => r.count[transport] === 1);
    const deleted = await fetch(`${gw.url}/admin/topics/${topic}`, { method: 'DELETE' });
    assert.deepEqual(await deleted.json(), { deleted: topic });
    await page.waitForFunction(() => window.log.resets.length > 0, null, { timeout: 10000 });
    assert.deepEqual(await page.evaluate(() => window.log.resets), [{ topic, reason: 'deleted' }]);
    const id = await publish(gw.url, topic, 'new');
    assert.match(id, /-1$/, 'the new history starts at 1');
    await waitForMessages(page, 2);
    const ids = await page.evaluate(() => window.log.messages.map((m) => m.id));
    assert.equal(ids[1], id);
    await context.close();
  });
}
