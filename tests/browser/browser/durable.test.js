'use strict';
// The demo with a data directory, as a user would try it (docs/ADMIN.md, `--data-dir`): three
// tabs of the chat, one per transport, chat; the gateway is killed with SIGKILL (no shutdown, no
// close frames) and started again on the same directory and address. Every tab keeps its
// history, gets what was published while it was away exactly once and in order, and is never
// told that messages could not be recovered.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startGateway, publish } = require('../lib/gateway');
const { launch, watchErrors, uniqueTopic } = require('../lib/browser');

let browser;
let dataDir;
const gateways = [];

before(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-durable-demo-'));
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  await Promise.all(gateways.map((gw) => gw.stop()));
  fs.rmSync(dataDir, { recursive: true, force: true });
});

// What a tab of the demo shows: its chat rows (message id, text) and its notes.
function shown(page) {
  return page.evaluate(() => ({
    chat: Array.from(document.querySelectorAll('#log li.chat'),
      (li) => [li.getAttribute('data-id'), li.querySelector('.msg').textContent]),
    notes: Array.from(document.querySelectorAll('#log li.note'), (li) => li.textContent),
  }));
}

function waitForState(page, state) {
  return page.waitForFunction((s) => document.getElementById('state').textContent === s, state, { timeout: 20000 });
}

function waitForText(page, text) {
  return page.waitForFunction((t) => Array.from(document.querySelectorAll('#log li.chat .msg'))
    .some((m) => m.textContent === t), text, { timeout: 20000, polling: 50 });
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

test('kill -9 and a restart on the same data directory: every tab resumes with its history and no reset', async () => {
  const first = await startGateway(['--data-dir', dataDir]);
  gateways.push(first);
  const room = uniqueTopic('room');
  const context = await browser.newContext();
  const tabs = [];
  for (const [name, transport] of [['alice', 'ws'], ['bob', 'sse'], ['carol', 'poll']]) {
    const page = await context.newPage();
    const errors = watchErrors(page);
    await page.goto(`${first.url}/?transport=${transport}&room=${room}&name=${name}`);
    await waitForState(page, 'open');
    assert.equal(await page.textContent('#transport'), transport);
    tabs.push({ page, errors, name, transport });
  }
  const [alice, bob, carol] = tabs;

  // Before the crash: one message from a tab, one from a backend over HTTP.
  await say(alice.page, 'before the crash');
  const fromBackend = await publish(first.url, room, { name: 'backend', text: 'also before' });
  for (const tab of tabs) await waitForText(tab.page, 'also before');
  const history = await shown(alice.page);
  assert.deepEqual(history.chat.map(([, text]) => text), ['before the crash', 'also before']);
  assert.equal(history.chat[1][0], fromBackend);

  await first.kill();
  for (const tab of tabs) await waitForState(tab.page, 'reconnecting');

  const second = await startGateway(['--data-dir', dataDir], { listen: `127.0.0.1:${first.port}` });
  gateways.push(second);
  // Published as soon as the gateway is back, whether or not a tab has reconnected yet: a tab
  // that has not gets it by resuming from its last id.
  const whileAway = await publish(second.url, room, { name: 'backend', text: 'while you were away' });
  for (const tab of tabs) await waitForState(tab.page, 'open');
  // Published after every tab has resumed, so it arrives after anything a resume could repeat.
  await say(carol.page, 'after the restart');
  for (const tab of tabs) await waitForText(tab.page, 'after the restart');

  for (const tab of tabs) {
    const { chat, notes } = await shown(tab.page);
    assert.deepEqual(chat.map(([, text]) => text),
      ['before the crash', 'also before', 'while you were away', 'after the restart'],
      `${tab.name}'s tab (${tab.transport}): its history kept, each message once, in order`);
    assert.deepEqual(chat.slice(0, 2), history.chat, `${tab.name}'s tab: the ids from before the crash`);
    assert.equal(chat[2][0], whileAway);
    assert.equal(new Set(chat.map(([id]) => id)).size, chat.length, `${tab.name}'s tab: no id twice`);
    assert.deepEqual(notes.filter((n) => /could not be recovered/.test(n)), [], `${tab.name}'s tab: no reset`);
    assert.equal(await tab.page.textContent('#transport'), tab.transport);
    // The browser logs the connections cut and refused while the gateway is down; nothing else.
    assert.deepEqual(tab.errors.filter((e) => !/Failed to load resource: net::ERR_|WebSocket connection to/.test(e)),
      [], `${tab.name}'s tab: no other console errors`);
  }
  await context.close();
});
