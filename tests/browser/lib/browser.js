'use strict';
// Headless Chromium (the system's /usr/bin/chromium, driven by playwright-core) and a small test
// page served from the gateway's own origin.
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
  '--no-first-run', '--disable-component-update', '--disable-sync'];

function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS });
}

// Collects console errors and uncaught page errors, for the assertions that want none.
function watchErrors(page) {
  const errors = [];
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(`console: ${msg.text()}`); });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  return errors;
}

// The host page is the gateway's own /healthz (a real response from the gateway's address:
// a page answered by Playwright's route.fulfill counts as "public" for Chromium's Local Network
// Access checks, which then block its WebSockets to 127.0.0.1), and switchboard.js is loaded from
// the gateway as a <script> tag.
const HOST_PAGE = '/healthz';

// Opens a page on `origin`, runs `init` before any script, loads /switchboard.js, connects a client
// with `options` and subscribes it to `topics`. Everything the client reports lands in window.log.
async function clientPage(context, origin, { options = {}, topics = [], init = null, initArg, setup = null } = {}) {
  const page = await context.newPage();
  page.errors = watchErrors(page);
  if (setup) await setup(page);
  if (init) await page.addInitScript(init, initArg);
  await page.goto(origin + HOST_PAGE);
  await page.addScriptTag({ url: '/switchboard.js' });
  await page.evaluate(({ options, topics }) => {
    var log = window.log = { messages: [], states: [], transports: [], resets: [], errors: [], subscribed: 0 };
    var sb = window.sb = Switchboard.connect('', options);
    sb.on('state', function (s) { log.states.push(s); });
    sb.on('transport', function (t) { log.transports.push(t); });
    sb.on('reset', function (r) { log.resets.push(r); });
    sb.on('error', function (e) { log.errors.push(e.code + (e.transport ? '@' + e.transport : '')); });
    sb.on('subscribed', function () { log.subscribed++; });
    topics.forEach(function (t) { sb.subscribe(t, function (data, m) { log.messages.push(m); }); });
  }, { options, topics });
  return page;
}

// Resolves when the client is open and every subscribed topic has a position (established).
function established(page, timeout = 15000) {
  return page.waitForFunction(() => window.sb.state === 'open' &&
    window.sb.topics().every((t) => typeof window.sb.positions[t] === 'string'), null, { timeout, polling: 50 });
}

function waitForMessages(page, n, timeout = 15000) {
  return page.waitForFunction((n) => window.log.messages.length >= n, n, { timeout, polling: 50 });
}

function pagePublish(page, topic, data) {
  return page.evaluate(({ topic, data }) => new Promise((resolve) => {
    window.sb.publish(topic, data, (err, id) => resolve(err ? { error: err.code, message: err.message } : { id }));
  }), { topic, data });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let counter = 0;
function uniqueTopic(prefix = 't') { return `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`; }

module.exports = { launch, watchErrors, clientPage, established, waitForMessages, pagePublish, sleep, uniqueTopic };
