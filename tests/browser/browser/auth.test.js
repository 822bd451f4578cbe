'use strict';
// Access control through the browser client, in headless Chromium against real gateways that
// check real HS256 tokens made here: the token on each transport (in-band on WebSocket, the
// cookie or access_token for EventSource, Authorization on polls and publishes), refusals
// reported without fallback, refreshing before exp, and recovering from an expired token
// without losing or repeating a message.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startGateway } = require('../lib/gateway');
const { launch, watchErrors, established, waitForMessages, pagePublish, sleep, uniqueTopic } = require('../lib/browser');

const SECRET = 'browser-tests-secret';
const KEY = 'browser-tests-publish-key';
const COOKIE = 'switchboard_token';

let gw;     // tokens from the Authorization header, the cookie and in-band; no query tokens
let gwq;    // the same, and access_token in the query (--allow-query-token)
let browser;
let dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-auth-'));
  const config = path.join(dir, 'auth.toml');
  fs.writeFileSync(config, '[[anonymous]]\ntopics = ["public.*"]\nallow = ["subscribe"]\n');
  // No leeway: a token's end is the gateway's, to the second.
  const args = ['--config', config, '--jwt-secret', SECRET, '--jwt-leeway', '0s', '--publish-key', KEY];
  [gw, gwq, browser] = await Promise.all([startGateway(args), startGateway([...args, '--allow-query-token']), launch()]);
});

after(async () => {
  if (browser) await browser.close();
  await Promise.all([gw && gw.stop(), gwq && gwq.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

// An HS256 JWT, as a backend would issue it.
function jwt(claims, secret = SECRET) {
  const signed = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${signed}.${crypto.createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

// A token for `subscribe` and `publish` patterns that lasts `life` seconds from now.
function token({ subscribe = [], publish = [], life = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return jwt({ sub: 'ann', iat: now, exp: now + life, switchboard: { subscribe, publish } });
}

// Publishes over HTTP as a backend does, with the publish key.
async function publish(base, topic, data) {
  const res = await fetch(`${base}/events?topic=${encodeURIComponent(topic)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify(data),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`publish failed: ${res.status} ${JSON.stringify(body)}`);
  return body.id;
}

const FAST = { timeouts: { connect: 3000 }, reconnect: { min: 100, max: 600 } };

// A page on `origin` with a client forced to `transport`. `tokens`, when given, is called in
// this process for each token the page's token function asks for (returning a token, null, or
// throwing), through window.nextToken.
async function authPage(context, origin, transport, { topics = [], tokens = null, options = {} } = {}) {
  let calls = 0;
  if (tokens) await context.exposeFunction('nextToken', () => tokens(++calls));
  const page = await context.newPage();
  page.errors = watchErrors(page);
  page.tokenCalls = () => calls;
  await page.goto(origin + '/healthz');
  await page.addScriptTag({ url: '/switchboard.js' });
  await page.evaluate(({ options, topics, useTokens }) => {
    var log = window.log = { messages: [], states: [], transports: [], errors: [] };
    if (useTokens) {
      // The token function, as an application writes it: ask the backend, call back.
      options.token = function (callback) {
        window.nextToken().then(function (t) { callback(null, t); }, function (e) { callback(e); });
      };
    }
    var sb = window.sb = Switchboard.connect('', options);
    sb.on('state', function (s) { log.states.push(s); });
    sb.on('transport', function (t) { log.transports.push(t); });
    sb.on('error', function (e) {
      log.errors.push({ code: e.code, transport: e.transport || null, status: e.status || null, topics: e.topics || null });
    });
    topics.forEach(function (t) { sb.subscribe(t, function (data, m) { log.messages.push(m); }); });
  }, { options: Object.assign({ transports: [transport] }, FAST, options), topics, useTokens: !!tokens });
  return page;
}

const log = (page) => page.evaluate(() => window.log);
const ids = async (page) => (await log(page)).messages.map((m) => m.id);

function cookie(url, value) {
  return { name: COOKIE, value, url, httpOnly: true, sameSite: 'Strict' };
}

// Waits for `expected` and a little longer, to catch a repeat arriving late.
async function expectExactly(page, expected) {
  await waitForMessages(page, expected.length, 20000);
  await sleep(300);
  assert.deepEqual(await ids(page), expected);
}

// How each transport gets its token in these tests. EventSource cannot send a header: the
// cookie (a token function calling back null says "the cookie carries it") or access_token.
const HOW = {
  ws: { base: () => gw.url, withToken: (t) => ({ tokens: () => t }) },
  poll: { base: () => gw.url, withToken: (t) => ({ tokens: () => t }) },
  sse: { base: () => gwq.url, withToken: (t) => ({ tokens: () => t, options: { queryToken: true } }) },
};

for (const transport of ['ws', 'sse', 'poll']) {
  test(`${transport}: a token's topics may be subscribed and published to; others are refused`, async () => {
    const context = await browser.newContext();
    try {
      const topic = uniqueTopic('room');
      const other = uniqueTopic('other');
      const how = HOW[transport];
      const page = await authPage(context, how.base(), transport,
        Object.assign({ topics: [topic] }, how.withToken(token({ subscribe: [`${topic}*`], publish: [topic] }))));
      await established(page);
      const first = await publish(how.base(), topic, 'from the backend');
      const own = await pagePublish(page, topic, 'from the page');
      assert.ok(own.id, JSON.stringify(own));
      const refused = await pagePublish(page, other, 'not mine');
      assert.equal(refused.error, 'forbidden', JSON.stringify(refused));
      await expectExactly(page, [first, own.id]);
      const l = await log(page);
      assert.deepEqual(l.states, ['open']);
      assert.deepEqual(l.transports, [transport]);
      assert.deepEqual(l.errors, []);
      // Chromium logs the refused publish's 403 (and the host page's missing favicon); nothing else.
      assert.deepEqual(page.errors.filter((e) => !/status of (403|404)/.test(e)), []);
    } finally {
      await context.close();
    }
  });

  test(`${transport}: a forbidden topic is reported to the app, without retrying or another transport`, async () => {
    const context = await browser.newContext();
    try {
      const allowed = uniqueTopic('mine');
      const secret = uniqueTopic('secret');
      const how = HOW[transport];
      const page = await authPage(context, how.base(), transport, Object.assign({ topics: [secret] },
        how.withToken(token({ subscribe: [allowed] })), { options: Object.assign({}, how.withToken().options, { transports: [transport, 'poll'] }) }));
      await page.waitForFunction(() => window.sb.state === 'closed', null, { timeout: 15000 });
      const l = await log(page);
      assert.equal(l.errors.length, 1, JSON.stringify(l.errors));
      assert.equal(l.errors[0].code, 'forbidden');
      assert.deepEqual(l.errors[0].topics, [secret]);
      if (transport !== 'ws') assert.equal(l.errors[0].status, 403);
      assert.deepEqual(l.transports, [transport], 'no fallback');
      assert.equal(page.tokenCalls(), 1, 'not asked again: a fresh token has the same permissions');
    } finally {
      await context.close();
    }
  });

  test(`${transport}: anonymous clients get the anonymous rules: public topics yes, others unauthorized`, async () => {
    const context = await browser.newContext();
    const other = await browser.newContext();
    try {
      const pub = `public.${uniqueTopic()}`;
      const priv = uniqueTopic('private');
      const base = HOW[transport].base();
      // No token option at all, as the demo: the anonymous rules allow this topic.
      const open = await authPage(context, base, transport, { topics: [pub] });
      await established(open);
      const id = await publish(base, pub, 'news');
      await expectExactly(open, [id]);
      // A token function with no one logged in: it has no token to give.
      const denied = await authPage(other, base, transport, {
        topics: [priv], tokens: () => null, options: { transports: [transport, 'poll'] },
      });
      await denied.waitForFunction(() => window.sb.state === 'closed', null, { timeout: 15000 });
      const l = await log(denied);
      assert.deepEqual(l.errors.map((e) => e.code), ['unauthorized', 'unauthorized'], 'asked for a token once more, then reported');
      if (transport !== 'ws') assert.deepEqual(l.errors.map((e) => e.status), [401, 401]);
      assert.deepEqual(l.transports, [transport]);
      assert.equal(denied.tokenCalls(), 2);
    } finally {
      await Promise.all([context.close(), other.close()]);
    }
  });

  test(`${transport}: tokens are refreshed before they end, with no message lost or repeated`, async () => {
    const context = await browser.newContext();
    const sockets = [];
    const streams = [];
    const bearers = [];
    try {
      const topic = uniqueTopic('live');
      const how = HOW[transport];
      // 6 s tokens: the client fetches the next one after 3 s, the gateway ends them at 6 s.
      const mint = () => token({ subscribe: [topic], life: 6 });
      context.on('request', (r) => {
        const url = new URL(r.url());
        if (url.pathname === '/events' && r.method() === 'GET') streams.push(url.searchParams.get('access_token'));
        if (url.pathname === '/poll') {
          // Polls still going out when the context closes have no headers to give any more.
          const header = r.headerValue('authorization').catch(() => null);
          bearers.push(header);
        }
      });
      context.on('page', (p) => p.on('websocket', (ws) => sockets.push(ws.url())));
      const page = await authPage(context, how.base(), transport, Object.assign({ topics: [topic] }, how.withToken(), { tokens: mint }));
      await established(page);
      const sent = [];
      // Published all along, until two refreshes have happened and a little after.
      while (page.tokenCalls() < 3) {
        sent.push(await publish(how.base(), topic, sent.length));
        await sleep(100);
      }
      for (let i = 0; i < 5; i++) sent.push(await publish(how.base(), topic, sent.length));
      await expectExactly(page, sent);
      const l = await log(page);
      assert.deepEqual(l.errors, [], 'no token ran out');
      assert.deepEqual(l.states, ['open'], 'open throughout');
      if (transport === 'ws') {
        assert.equal(sockets.length, 1, 'refreshed in-band on the same WebSocket');
        assert.equal(sockets[0].includes('token'), false, 'no token in the URL');
      } else if (transport === 'sse') {
        assert.ok(streams.length >= 3, `a new stream per token: ${streams.length}`);
        assert.equal(new Set(streams).size, streams.length, 'each with its own token');
      } else {
        const sentWith = await Promise.all(bearers.slice());
        assert.ok(new Set(sentWith).size >= 3, 'polls carry each new token');
        assert.ok(sentWith.every((b) => /^Bearer ey/.test(b)), JSON.stringify(sentWith));
      }
    } finally {
      await context.close();
    }
  });

  test(`${transport}: a token that runs out mid-stream is replaced and the stream resumes from its cursor`, async () => {
    const context = await browser.newContext();
    try {
      const topic = uniqueTopic('gap');
      const how = HOW[transport];
      // The first token lasts 3 s; fetching its successor fails (a backend hiccup), so it runs
      // out; the token fetched on reconnecting works.
      const tokens = (n) => {
        if (n === 1) return token({ subscribe: [topic], life: 3 });
        if (n === 2) throw new Error('token endpoint down');
        return token({ subscribe: [topic] });
      };
      const page = await authPage(context, how.base(), transport, Object.assign({ topics: [topic] }, how.withToken(), { tokens }));
      await established(page);
      const sent = [];
      const recovered = () => page.evaluate((t) => window.log.errors.some((e) => e.code === 'token_expired' && e.transport === t) &&
        window.sb.state === 'open', transport);
      while (!(await recovered())) {
        sent.push(await publish(how.base(), topic, sent.length));
        await sleep(100);
      }
      for (let i = 0; i < 5; i++) sent.push(await publish(how.base(), topic, sent.length));
      await expectExactly(page, sent);
      const l = await log(page);
      assert.deepEqual(l.errors.map((e) => e.code), ['token_error', 'token_expired']);
      assert.deepEqual(l.transports, [transport], 'no fallback');
      assert.equal(page.tokenCalls(), 3);
    } finally {
      await context.close();
    }
  });
}

test('sse: Chromium\'s EventSource carries an HttpOnly SameSite=Strict cookie, and so do publishes', async () => {
  const context = await browser.newContext();
  try {
    const topic = uniqueTopic('cookie');
    await context.addCookies([cookie(gw.url, token({ subscribe: [topic], publish: [topic] }))]);
    const urls = [];
    context.on('request', (r) => { if (new URL(r.url()).pathname === '/events') urls.push(r.url()); });
    // No token option: the cookie does everything.
    const page = await authPage(context, gw.url, 'sse', { topics: [topic] });
    await established(page);
    assert.equal(await page.evaluate(() => document.cookie), '', 'HttpOnly: out of the page\'s reach');
    const first = await publish(gw.url, topic, 1);
    const own = await pagePublish(page, topic, 2);
    assert.ok(own.id, JSON.stringify(own));
    await expectExactly(page, [first, own.id]);
    assert.ok(urls.every((u) => !u.includes('access_token')), JSON.stringify(urls));
  } finally {
    await context.close();
  }
});

test('sse: access_token through EventSource where the gateway allows it (queryToken), 401 where it does not', async () => {
  for (const [base, allowed] of [[() => gwq.url, true], [() => gw.url, false]]) {
    const context = await browser.newContext();
    try {
      const topic = uniqueTopic('query');
      const page = await authPage(context, base(), 'sse', {
        topics: [topic], tokens: () => token({ subscribe: [topic] }), options: { queryToken: true, transports: ['sse', 'poll'] },
      });
      if (allowed) {
        await established(page);
        const id = await publish(base(), topic, 'q');
        await expectExactly(page, [id]);
        assert.deepEqual((await log(page)).errors, []);
      } else {
        await page.waitForFunction(() => window.sb.state === 'closed', null, { timeout: 15000 });
        const l = await log(page);
        assert.deepEqual(l.errors.map((e) => `${e.code}/${e.status}@${e.transport}`), ['unauthorized/401@sse', 'unauthorized/401@sse']);
        assert.deepEqual(l.transports, ['sse'], 'an auth refusal is no reason to fall back');
      }
    } finally {
      await context.close();
    }
  }
});
