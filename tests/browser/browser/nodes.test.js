'use strict';
// Several gateway nodes on one Redis, behind nginx with the shipped deploy/nginx-cluster.conf:
// the node a browser client is connected to is killed (SIGKILL: no close frame, no shutdown),
// messages are published on the surviving nodes meanwhile and afterwards, and the client, which
// only knows nginx's address, must move to a surviving node and receive every message exactly
// once, in order, with no reset.
//
// Mechanisms:
// - a redis-server on a free port (lib/redis.js), shared by the whole file; three gateway
//   processes on it (`--redis`) and nginx in front of them (lib/nginx.js: the site file with its
//   listen port and upstream `server` lines rewritten, as tests/support/nginx.rs does), fresh for
//   every test, since each test kills one node;
// - the node the client is on is the one whose /healthz counts a connection (WebSocket, SSE
//   stream or held poll): the page is the only client.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, publish } = require('../lib/gateway');
const { startRedis } = require('../lib/redis');
const { startNginxCluster } = require('../lib/nginx');
const { launch, clientPage, established, waitForMessages, pagePublish, sleep, uniqueTopic } = require('../lib/browser');

let redis;
let browser;

before(async () => {
  [redis, browser] = await Promise.all([startRedis(), launch()]);
});

after(async () => {
  if (browser) await browser.close();
  if (redis) await redis.stop();
});

// As in resume.test.js, but the first retry after a drop waits 250-500 ms (min, less up to half
// of it as jitter) instead of 50-100, so that the messages published right after the kill are
// published while the client is away (there is no proxy here to hold it off).
const FAST = { timeouts: { connect: 3000 }, reconnect: { min: 500, max: 1000 } };
const NODES = 3;

// Three nodes on the shared Redis and nginx in front of them.
async function startCluster() {
  const nodes = await Promise.all(Array.from({ length: NODES }, () => startGateway(['--redis', redis.url])));
  let nginx;
  try {
    nginx = await startNginxCluster(nodes.map((n) => n.port));
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  }
  return { nodes, nginx };
}

// Each node's open streams, or null for a node that does not answer (killed).
async function connectionCounts(nodes) {
  return Promise.all(nodes.map((n) => n.health().then((h) => h.connections, () => null)));
}

// Waits until `nodes` hold exactly one connection between them, and returns its node.
async function nodeHoldingTheClient(nodes, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let counts;
  for (;;) {
    counts = await connectionCounts(nodes);
    if (counts.reduce((a, c) => a + (c || 0), 0) === 1) return nodes[counts.indexOf(1)];
    if (Date.now() > deadline) throw new Error(`no single node holds the client after ${timeoutMs} ms: connections ${JSON.stringify(counts)}`);
    await sleep(50);
  }
}

for (const transport of ['ws', 'sse', 'poll', 'auto']) {
  test(`${transport}: the client's node is killed; through nginx it moves to another node and loses nothing`, async () => {
    const { nodes, nginx } = await startCluster();
    const context = await browser.newContext();
    let failed = true;
    try {
      const topics = [uniqueTopic('a'), uniqueTopic('b')];
      const options = transport === 'auto' ? FAST : Object.assign({ transports: [transport] }, FAST);
      const page = await clientPage(context, nginx.url, { topics, options });
      await established(page);
      if (transport !== 'auto') assert.equal(await page.evaluate(() => window.sb.transport), transport);

      const sent = [];
      const send = async (node, i, data) => { const topic = topics[i % 2]; sent.push({ topic, id: await publish(node.url, topic, data) }); };
      // Before: on every node, the client's own included (they share everything through Redis).
      for (let i = 0; i < 6; i++) await send(nodes[i % NODES], i, { before: i });
      await waitForMessages(page, 6);

      const victim = await nodeHoldingTheClient(nodes);
      const survivors = nodes.filter((n) => n !== victim);
      await victim.kill();
      if (transport !== 'poll') {
        // The client saw its connection drop. (A held poll may not see the kill at all: nginx
        // resends it to the next node, a GET whose response had not started, and the client's
        // cursor names its place there.)
        await page.waitForFunction(() => window.log.states.includes('reconnecting'), null, { timeout: 10000 });
      }
      // While the client is away or just reconnecting: on the surviving nodes.
      for (let i = 0; i < 6; i++) await send(survivors[i % survivors.length], i, { during: i });

      // The client is back, through nginx, on a surviving node.
      await nodeHoldingTheClient(survivors, 15000);
      await established(page, 15000);
      // The page publishes too: over its WebSocket, or with a POST through nginx, which passes
      // over the dead node (a refused connection: the POST was never sent, so it may be resent).
      const own = await pagePublish(page, topics[0], { own: true });
      assert.ok(own.id, `the page's publish through nginx: ${JSON.stringify(own)}`);
      sent.push({ topic: topics[0], id: own.id });
      for (let i = 0; i < 4; i++) await send(survivors[i % survivors.length], i, { after: i });

      await expectExactly(page, topics, sent);
      const log = await page.evaluate(() => window.log);
      assert.deepEqual(log.resets, []);
      if (transport === 'auto') assert.equal(log.transports[0], 'ws');
      else assert.deepEqual([...new Set(log.transports)], [transport]);
      assert.equal(await page.evaluate(() => window.sb.state), 'open');
      failed = false;
    } catch (e) {
      e.message += `\n--- nginx error log (${nginx.dir}):\n${nginx.errorLog()}--- nginx access log:\n${nginx.accessLog()}---`;
      throw e;
    } finally {
      await context.close();
      await nginx.stop({ keep: failed });
      await Promise.all(nodes.map((n) => n.stop()));
    }
  });
}

// Every id exactly once, and each topic's in the order published; waits a little after the last
// one arrives, to catch duplicates arriving late.
async function expectExactly(page, topics, sent) {
  await waitForMessages(page, sent.length, 20000);
  await sleep(300);
  const got = await page.evaluate(() => window.log.messages.map((m) => ({ topic: m.topic, id: m.id })));
  assert.equal(got.length, sent.length, `expected ${sent.length} messages, got ${got.length}: ${JSON.stringify(got)}`);
  for (const t of topics) {
    assert.deepEqual(got.filter((m) => m.topic === t).map((m) => m.id), sent.filter((m) => m.topic === t).map((m) => m.id), `order in ${t}`);
  }
}
