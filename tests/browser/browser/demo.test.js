'use strict';
// The demo page, as a person would use it: two tabs of the chat.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
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

test('the demo loads without console errors and two tabs chat', async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 740 } });
  const room = uniqueTopic('room');
  const tabs = [];
  for (const name of ['alice', 'bob']) {
    const page = await context.newPage();
    const errors = watchErrors(page);
    const failed = [];
    page.on('requestfailed', (r) => failed.push(r.url()));
    page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
    await page.goto(`${gw.url}/?room=${room}`);
    assert.equal(await page.title(), 'Switchboard chat');
    await page.waitForFunction(() => document.getElementById('state').textContent === 'open', null, { timeout: 15000 });
    assert.equal(await page.textContent('#transport'), 'ws', 'the default transport is WebSocket');
    await page.fill('#name', name);
    await page.dispatchEvent('#name', 'change');
    tabs.push({ page, errors, failed, name });
  }
  const [alice, bob] = tabs;
  await alice.page.fill('#text', 'hi bob');
  await alice.page.click('#send');
  await bob.page.waitForSelector('#log li.chat .msg:text-is("hi bob")', { timeout: 10000 });
  await bob.page.fill('#text', 'hi alice');
  await bob.page.press('#text', 'Enter');
  await alice.page.waitForSelector('#log li.chat .msg:text-is("hi alice")', { timeout: 10000 });
  for (const tab of tabs) {
    await tab.page.waitForFunction(() => document.querySelectorAll('#log li.chat').length === 2, null, { timeout: 10000 });
    const rows = await tab.page.$$eval('#log li.chat', (lis) => lis.map((li) => [li.querySelector('.meta').textContent.split(' ')[0],
      li.querySelector('.msg').textContent, li.classList.contains('me')]));
    assert.deepEqual(rows, [['alice', 'hi bob', tab.name === 'alice'], ['bob', 'hi alice', tab.name === 'bob']]);
    assert.equal(await tab.page.inputValue('#text'), '', 'the input is cleared after sending');
    assert.deepEqual(tab.errors, [], `console errors in ${tab.name}'s tab`);
    assert.deepEqual(tab.failed, [], `failed requests in ${tab.name}'s tab`);
  }
  // readable on a phone: nothing wider than the viewport
  const overflow = await alice.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px`);
  await context.close();
});
