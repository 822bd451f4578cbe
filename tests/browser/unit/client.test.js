'use strict';
// Unit tests of static/switchboard.js with fake transports and fake timers.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const Switchboard = require(path.join(__dirname, '..', '..', '..', 'static', 'switchboard.js'));
const { makeEnv } = require('../lib/fakes');

const BASE = 'http://gw.test';

function setup(options = {}, have = {}) {
  const env = makeEnv();
  const opts = Object.assign({
    WebSocket: have.ws === false ? null : env.FakeWebSocket,
    EventSource: have.sse === false ? null : env.FakeEventSource,
    XMLHttpRequest: env.FakeXHR,
    timers: env.timers,
    random: () => 0,
    location: null,
  }, options);
  const sb = Switchboard.connect(options.base || BASE, opts);
  const log = { state: [], transport: [], reset: [], error: [], subscribed: [] };
  sb.on('state', (s) => log.state.push(s));
  sb.on('transport', (t) => log.transport.push(t));
  sb.on('reset', (r) => log.reset.push(r));
  sb.on('error', (e) => log.error.push(e));
  sb.on('subscribed', (t) => log.subscribed.push(t));
  return { env, sb, log, clock: env.clock };
}

function env_(n, topic, data) { return { topic, id: `${topic}-${n}`, data, time: 1 }; }

// Opens the newest fake WebSocket as the gateway would: URL topics answered by `subscribed`.
function wsOpen(env, positions) {
  const ws = env.sockets[env.sockets.length - 1];
  ws.serverOpen();
  const topics = ws.query.getAll('topic');
  if (topics.length) ws.receive({ type: 'subscribed', topics, positions });
  else ws.receive({ type: 'pong', ref: ws.frames('ping')[0].ref });
  return ws;
}

test('defaults to WebSocket, subscribes in the URL, reports state and transport', () => {
  const { env, sb, log, clock } = setup();
  const got = [];
  sb.subscribe('chat', (data, msg) => got.push([data, msg]));
  assert.equal(sb.state, 'connecting');
  clock.tick(0);
  assert.equal(env.sockets.length, 1);
  assert.equal(env.sockets[0].url, 'ws://gw.test/ws?topic=chat');
  assert.equal(sb.transport, 'ws');
  wsOpen(env, { chat: 'chat-0' });
  assert.equal(sb.state, 'open');
  assert.deepEqual(log.state, ['open']);
  assert.deepEqual(log.transport, ['ws']);
  assert.deepEqual(log.subscribed, [['chat']]);
  assert.deepEqual(sb.positions, { chat: 'chat-0' });
  env.sockets[0].receive(Object.assign({ type: 'message' }, env_(1, 'chat', { text: 'hi' })));
  assert.equal(got.length, 1);
  assert.deepEqual(got[0][0], { text: 'hi' });
  assert.deepEqual(got[0][1], { topic: 'chat', id: 'chat-1', data: { text: 'hi' }, time: 1 });
  assert.equal(sb.positions.chat, 'chat-1');
  // duplicates are dropped defensively
  env.sockets[0].receive(Object.assign({ type: 'message' }, env_(1, 'chat', { text: 'hi' })));
  assert.equal(got.length, 1);
  sb.close();
  assert.equal(sb.state, 'closed');
  assert.equal(env.sockets[0].closedByClient, 1000);
});

test('relative base URL resolves against location, extra params are sent', () => {
  const { env, sb, clock } = setup({ base: '/gw/', location: { protocol: 'https:', host: 'example.org' }, params: { token: 'a b', v: [1, 2] } });
  sb.subscribe('a');
  clock.tick(0);
  assert.equal(env.sockets[0].url, 'wss://example.org/gw/ws?topic=a&token=a%20b&v=1&v=2');
  assert.equal(sb.url, 'https://example.org/gw');
  sb.close();
});

test('invalid topics are refused', () => {
  const { sb, clock } = setup();
  assert.throws(() => sb.subscribe('a b'), /invalid topic/);
  assert.throws(() => sb.subscribe(''), /invalid topic/);
  let err;
  sb.publish('bad topic', 1, (e) => { err = e; });
  clock.tick(0);
  assert.equal(err.code, 'bad_topic');
  sb.publish('t', () => {}, (e) => { err = e; });
  clock.tick(0);
  assert.equal(err.code, 'bad_json');
  const circular = {};
  circular.self = circular;
  sb.publish('t', circular, (e) => { err = e; });
  clock.tick(0);
  assert.equal(err.code, 'bad_json');
  sb.close();
});

test('publish over WebSocket uses ref and ack/error', () => {
  const { env, sb, clock } = setup();
  const results = [];
  sb.publish('chat', { a: 1 }, (err, id) => results.push(['first', err, id]));
  clock.tick(0);
  const ws = wsOpen(env);
  const pubs = ws.frames('publish');
  assert.equal(pubs.length, 1, 'queued publish is sent on open');
  assert.deepEqual(pubs[0].data, { a: 1 });
  assert.equal(pubs[0].topic, 'chat');
  ws.receive({ type: 'ack', ref: pubs[0].ref, topic: 'chat', id: 'chat-7' });
  assert.deepEqual(results, [['first', null, 'chat-7']]);
  sb.publish('chat', 'x', (err, id) => results.push(['second', err && err.code, id]));
  const p2 = ws.frames('publish')[1];
  ws.receive({ type: 'error', ref: p2.ref, code: 'payload_too_large', message: 'too big' });
  assert.deepEqual(results[1], ['second', 'payload_too_large', undefined]);
  sb.close();
});

test('publishing while reconnecting is queued, bounded, and times out with an error', () => {
  const { env, sb, clock, log } = setup({ publishQueue: 2, timeouts: { publish: 5000 } });
  const res = [];
  sb.publish('t', 1, (e) => res.push(e ? e.code : 'ok1'));
  sb.publish('t', 2, (e) => res.push(e ? e.code : 'ok2'));
  sb.publish('t', 3, (e) => res.push(e ? e.code : 'ok3'));
  clock.tick(0);
  assert.deepEqual(res, ['queue_full']);
  clock.tick(5000);
  assert.deepEqual(res, ['queue_full', 'timeout', 'timeout']);
  // without a callback the error goes to on("error")
  sb.publish('t', 4);
  clock.tick(5000);
  assert.equal(log.error.filter((e) => e.code === 'timeout').length, 1);
  sb.close();
});

test('in-flight WebSocket publish fails clearly when the socket drops; close() fails the queue', () => {
  const { env, sb, clock } = setup();
  const res = [];
  clock.tick(0);
  const ws = wsOpen(env);
  sb.publish('t', 1, (e) => res.push(e && e.code));
  ws.serverClose(1006);
  assert.deepEqual(res, ['connection_lost']);
  sb.publish('t', 2, (e) => res.push(e && e.code));
  sb.close();
  clock.tick(0);
  assert.deepEqual(res, ['connection_lost', 'closed']);
  sb.publish('t', 3, (e) => res.push(e && e.code));
  clock.tick(0);
  assert.deepEqual(res, ['connection_lost', 'closed', 'closed']);
});

test('without WebSocket it lands on SSE; without both on poll', () => {
  {
    const { env, sb, clock } = setup({}, { ws: false });
    sb.subscribe('chat');
    clock.tick(0);
    assert.equal(sb.transport, 'sse');
    assert.equal(env.sources[0].url, 'http://gw.test/events?topic=chat');
    env.sources[0].emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-3' } }, 'chat-3');
    assert.equal(sb.state, 'open');
    assert.equal(sb.positions.chat, 'chat-3');
    sb.close();
    assert.equal(env.sources[0].closed, true);
  }
  {
    const { env, sb, clock } = setup({}, { ws: false, sse: false });
    sb.subscribe('chat');
    clock.tick(0);
    assert.equal(sb.transport, 'poll');
    assert.equal(env.xhrs[0].url, 'http://gw.test/poll?topic=chat&timeout=0');
    env.xhrs[0].respond(200, { messages: [], cursor: 'chat-3', positions: { chat: 'chat-3' }, reset: [], more: false });
    assert.equal(sb.state, 'open');
    assert.equal(env.xhrs[1].url, 'http://gw.test/poll?topic=chat&since=chat-3&timeout=25');
    sb.close();
    assert.equal(env.xhrs[1].aborted, true);
  }
});

test('no transport available at all: error and closed', () => {
  const { sb, clock, log } = setup({ transports: ['ws'] }, { ws: false });
  clock.tick(0);
  assert.equal(sb.state, 'closed');
  assert.equal(log.error[0].code, 'no_transport');
});

test('a WebSocket closed before it opens falls back to SSE at once, is remembered, and retried later', () => {
  const { env, sb, clock, log } = setup({ reconnect: { retryBetter: 60000, min: 100 } });
  const start = clock.now();
  sb.subscribe('chat');
  clock.tick(0);
  env.sockets[0].serverClose(1006);
  assert.equal(sb.transport, 'sse');
  assert.equal(env.sources.length, 1);
  env.sources[0].emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-1' } });
  assert.equal(sb.state, 'open');
  assert.equal(log.error[0].code, 'closed');
  assert.equal(log.error[0].transport, 'ws');
  // the stream drops after a while: the reconnect does not go back to the dead WebSocket
  clock.tick(10000);
  env.sources[0].emit('message', env_(2, 'chat', 'x'));
  env.sources[0].fail();
  clock.tick(1000);
  assert.equal(env.sockets.length, 1, 'no new WebSocket attempt yet');
  assert.equal(env.sources.length, 2);
  assert.equal(env.sources[1].query.get('since'), 'chat-2');
  env.sources[1].emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-2' } });
  // once the demotion ends, the better transport is tried again
  clock.tick(start + 60000 - clock.now() - 1);
  assert.equal(env.sockets.length, 1);
  clock.tick(2);
  assert.equal(env.sockets.length, 2);
  assert.equal(sb.transport, 'ws');
  assert.equal(env.sockets[1].query.get('since'), 'chat-2');
  // it fails again: back on SSE, and WebSocket is demoted for twice as long
  env.sockets[1].serverClose(1006);
  assert.equal(sb.transport, 'sse');
  env.sources[2].emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-2' } });
  clock.tick(119999);
  assert.equal(env.sockets.length, 2);
  clock.tick(2);
  assert.equal(env.sockets.length, 3);
  wsOpen(env, { chat: 'chat-2' });
  assert.equal(sb.transport, 'ws');
  assert.equal(sb.state, 'open');
  sb.close();
});

test('an SSE stream that stays silent (buffering proxy) falls back to poll', () => {
  const { env, sb, clock, log } = setup({ timeouts: { connect: 3000 } }, { ws: false });
  sb.subscribe('chat');
  clock.tick(0);
  assert.equal(sb.transport, 'sse');
  clock.tick(2999);
  assert.equal(sb.transport, 'sse');
  clock.tick(1);
  assert.equal(env.sources[0].closed, true);
  assert.equal(sb.transport, 'poll');
  assert.equal(log.error[0].code, 'connect_timeout');
  env.xhrs[0].respond(200, { messages: [], cursor: 'c', positions: { chat: 'chat-0' }, reset: [], more: false });
  assert.equal(sb.state, 'open');
  sb.close();
});

test('a silent open WebSocket is pinged and then abandoned', () => {
  const { env, sb, clock, log } = setup({ timeouts: { silence: 9000 } });
  sb.subscribe('chat');
  clock.tick(0);
  const ws = wsOpen(env, { chat: 'chat-0' });
  clock.tick(3000);
  assert.equal(ws.frames('ping').length, 2, 'open ping + idle ping');
  ws.receive({ type: 'pong', ref: 'idle' });
  clock.tick(3000);
  assert.equal(sb.state, 'open');
  clock.tick(9000);
  assert.equal(log.error[0].code, 'silence');
  assert.equal(sb.state, 'reconnecting');
  clock.tick(1000);
  assert.equal(sb.transport, 'sse', 'a silent transport is not retried first');
  assert.equal(env.sources[0].query.get('since'), 'chat-0');
  sb.close();
});

test('resume: the cursor for several topics is their positions joined with "."', () => {
  const { env, sb, clock } = setup();
  const got = [];
  sb.subscribe('a', (d) => got.push('a' + d));
  sb.subscribe('b', (d) => got.push('b' + d));
  clock.tick(0);
  assert.equal(env.sockets[0].url, 'ws://gw.test/ws?topic=a&topic=b');
  const ws = wsOpen(env, { a: 'a-0', b: 'b-5' });
  ws.receive(Object.assign({ type: 'message' }, env_(1, 'a', 1)));
  ws.serverClose(1001); // going away: not the transport's fault, so WebSocket is tried again
  assert.equal(sb.state, 'reconnecting');
  clock.tick(500);
  const ws2 = env.sockets[1];
  assert.equal(ws2.url, 'ws://gw.test/ws?topic=a&topic=b&since=a-1.b-5');
  // the socket drops before it opens: SSE resumes from the same cursor
  ws2.serverClose(1006);
  const es = env.sources[0];
  assert.equal(es.url, 'http://gw.test/events?topic=a&topic=b&since=a-1.b-5');
  es.emit('subscribed', { topics: ['a', 'b'], positions: { a: 'a-1', b: 'b-5' } });
  es.emit('message', env_(1, 'a', 1)); // a duplicate from a confused server is dropped
  es.emit('message', env_(6, 'b', 6));
  es.emit('message', env_(2, 'a', 2));
  assert.deepEqual(got, ['a1', 'b6', 'a2']);
  assert.equal(sb.cursor(), 'a-2.b-6');
  sb.close();
});

test('WebSocket: subscribing while open sends an in-band subscribe; unsubscribe too', () => {
  const { env, sb, clock, log } = setup();
  sb.subscribe('a');
  clock.tick(0);
  const ws = wsOpen(env, { a: 'a-0' });
  sb.subscribe('b', () => {});
  sb.subscribe('c', () => {});
  clock.tick(0);
  const subs = ws.frames('subscribe');
  assert.equal(subs.length, 1);
  assert.deepEqual(subs[0].topics, ['b', 'c']);
  assert.equal(subs[0].since, undefined);
  ws.receive({ type: 'subscribed', ref: subs[0].ref, topics: ['b', 'c'], positions: { b: 'b-2', c: 'c-0' } });
  assert.deepEqual(sb.positions, { a: 'a-0', b: 'b-2', c: 'c-0' });
  assert.deepEqual(log.subscribed[1], ['b', 'c']);
  sb.unsubscribe('b');
  clock.tick(0);
  assert.deepEqual(ws.frames('unsubscribe')[0].topics, ['b']);
  assert.equal(sb.positions.b, undefined);
  // messages of a topic no longer subscribed are ignored
  ws.receive(Object.assign({ type: 'message' }, env_(3, 'b', 1)));
  assert.equal(sb.positions.b, undefined);
  sb.close();
});

test('WebSocket: a subscription made while the socket connects is sent on open with its positions', () => {
  const { env, sb, clock } = setup({ positions: { b: 'b-9' } });
  sb.subscribe('a');
  clock.tick(0);
  sb.subscribe('b');
  clock.tick(0);
  const ws = wsOpen(env, { a: 'a-0' });
  const sub = ws.frames('subscribe')[0];
  assert.deepEqual(sub.topics, ['b']);
  assert.equal(sub.since, 'b-9');
  sb.close();
});

test('SSE: a new topic restarts the stream with the joined cursor, without leaving "open"', () => {
  const { env, sb, clock, log } = setup({}, { ws: false });
  sb.subscribe('a');
  clock.tick(0);
  env.sources[0].emit('subscribed', { topics: ['a'], positions: { a: 'a-4' } });
  sb.subscribe('b');
  clock.tick(0);
  assert.equal(env.sources[0].closed, true);
  assert.equal(env.sources[1].url, 'http://gw.test/events?topic=a&topic=b&since=a-4');
  env.sources[1].emit('subscribed', { topics: ['a', 'b'], positions: { a: 'a-4', b: 'b-1' } });
  assert.deepEqual(log.state, ['open']);
  assert.deepEqual(sb.positions, { a: 'a-4', b: 'b-1' });
  sb.close();
});

test('poll: resets, messages, positions, more, errors', () => {
  const { env, sb, clock, log } = setup({ timeouts: { poll: 10000 } }, { ws: false, sse: false });
  const got = [];
  sb.subscribe('a', (d, m) => got.push(m.id));
  clock.tick(0);
  env.xhrs[0].respond(200, { messages: [], cursor: 'a-0', positions: { a: 'a-0' }, reset: [], more: false });
  const x1 = env.xhrs[1];
  assert.equal(x1.query.get('timeout'), '10');
  x1.respond(200, {
    messages: [env_(5, 'a', 5), env_(6, 'a', 6)], cursor: 'a-6', positions: { a: 'a-6' },
    reset: [{ topic: 'a', reason: 'retention' }], more: true,
  });
  assert.deepEqual(log.reset, [{ topic: 'a', reason: 'retention' }]);
  assert.deepEqual(got, ['a-5', 'a-6']);
  const x2 = env.xhrs[2];
  assert.equal(x2.query.get('timeout'), '0');
  assert.equal(x2.query.get('since'), 'a-6');
  x2.respond(200, { messages: [], cursor: 'a-6', positions: { a: 'a-6' }, reset: [], more: false });
  // a held poll that never answers is abandoned after poll + connect timeouts
  const x3 = env.xhrs[3];
  clock.tick(10000 + 10000);
  assert.equal(x3.aborted, true);
  assert.equal(log.error[0].code, 'timeout');
  assert.equal(sb.state, 'reconnecting');
  clock.tick(500);
  assert.equal(env.xhrs[4].query.get('since'), 'a-6');
  env.xhrs[4].respond(503, { error: { code: 'shutting_down', message: 'bye' } });
  assert.equal(log.error[1].code, 'shutting_down');
  assert.equal(log.error[1].status, 503);
  sb.close();
});

test('publish over HTTP when on SSE/poll: JSON body, serialised, server errors reach the callback', () => {
  const { env, sb, clock } = setup({}, { ws: false });
  const res = [];
  sb.subscribe('chat');
  clock.tick(0);
  env.sources[0].emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-0' } });
  sb.publish('chat', { text: 'hé' }, (e, id) => res.push([e && e.code, id]));
  sb.publish('chat', 'two', (e, id) => res.push([e && e.code, id]));
  const posts = env.xhrs.filter((x) => x.method === 'POST');
  assert.equal(posts.length, 1, 'one POST at a time keeps the order');
  assert.equal(posts[0].url, 'http://gw.test/events?topic=chat');
  assert.equal(posts[0].headers['content-type'], 'application/json');
  assert.equal(posts[0].body, '{"text":"hé"}');
  posts[0].respond(200, { topic: 'chat', id: 'chat-1' });
  const p2 = env.xhrs.filter((x) => x.method === 'POST')[1];
  assert.equal(p2.body, '"two"');
  p2.respond(413, { error: { code: 'payload_too_large', message: 'big' } });
  assert.deepEqual(res, [[null, 'chat-1'], ['payload_too_large', undefined]]);
  sb.close();
});

test('reset frames on WebSocket reach on("reset")', () => {
  const { env, sb, clock, log } = setup();
  sb.subscribe('a');
  clock.tick(0);
  const ws = env.sockets[0];
  ws.serverOpen();
  ws.receive({ type: 'reset', topic: 'a', reason: 'history_lost' });
  ws.receive({ type: 'subscribed', topics: ['a'], positions: { a: 'a-1' } });
  assert.deepEqual(log.reset, [{ topic: 'a', reason: 'history_lost' }]);
  sb.close();
});

test('backoff: exponential, capped, with jitter; a failed round does not demote transports', () => {
  let r = 1;
  const { env, sb, clock } = setup({ reconnect: { min: 100, max: 1000, factor: 2, jitter: 0.5 }, random: () => r });
  sb.subscribe('a');
  clock.tick(0);
  const attempts = () => env.sockets.length + env.sources.length + env.xhrs.length;
  // every transport fails: ws, sse, poll in one round, then wait
  env.sockets[0].serverClose(1006);
  env.sources[0].fail();
  env.xhrs[0].networkError();
  assert.equal(attempts(), 3);
  assert.equal(sb.state, 'connecting');
  clock.tick(49);
  assert.equal(attempts(), 3);
  clock.tick(1);
  assert.equal(attempts(), 4, '100 ms * (1 - 0.5 * 1) = 50 ms');
  assert.equal(sb.transport, 'ws', 'the next round starts from the best transport again');
  env.sockets[1].serverClose(1006);
  env.sources[1].fail();
  r = 0;
  env.xhrs[1].networkError();
  clock.tick(199);
  assert.equal(attempts(), 6);
  clock.tick(1);
  assert.equal(attempts(), 7, 'second round waits 200 ms');
  for (let i = 0; i < 5; i++) {
    env.sockets[env.sockets.length - 1].serverClose(1006);
    env.sources[env.sources.length - 1].fail();
    env.xhrs[env.xhrs.length - 1].networkError();
    clock.tick(1000);
  }
  env.sockets[env.sockets.length - 1].serverClose(1006);
  env.sources[env.sources.length - 1].fail();
  env.xhrs[env.xhrs.length - 1].networkError();
  const before = attempts();
  clock.tick(999);
  assert.equal(attempts(), before);
  clock.tick(1);
  assert.equal(attempts(), before + 1, 'capped at max');
  sb.close();
  assert.equal(clock.pending(), 0, 'close() leaves no timer behind');
});

test('a throwing handler does not break delivery', () => {
  const { env, sb, clock } = setup();
  const got = [];
  sb.subscribe('a', () => { throw new Error('app bug'); });
  sb.subscribe('a', (d) => got.push(d));
  clock.tick(0);
  const ws = wsOpen(env, { a: 'a-0' });
  ws.receive(Object.assign({ type: 'message' }, env_(1, 'a', 'x')));
  assert.deepEqual(got, ['x']);
  assert.throws(() => clock.tick(0), /app bug/);
  sb.close();
});

test('unsubscribe with a handler keeps the topic while other handlers remain', () => {
  const { env, sb, clock } = setup();
  const h1 = () => {};
  const h2 = () => {};
  sb.subscribe('a', h1).subscribe('a', h2);
  clock.tick(0);
  const ws = wsOpen(env, { a: 'a-0' });
  sb.unsubscribe('a', h1);
  clock.tick(0);
  assert.equal(ws.frames('unsubscribe').length, 0);
  sb.unsubscribe('a', h2);
  clock.tick(0);
  assert.equal(ws.frames('unsubscribe').length, 1);
  assert.deepEqual(sb.topics(), []);
  sb.close();
});

test('a WebSocket that dies right after opening, without a reason, counts against WebSocket', () => {
  const { env, sb, clock } = setup({ reconnect: { min: 100, stable: 5000 } });
  sb.subscribe('a');
  clock.tick(0);
  wsOpen(env, { a: 'a-0' });
  clock.tick(1000);
  env.sockets[0].serverClose(1006);
  clock.tick(100);
  assert.equal(sb.transport, 'sse');
  assert.equal(env.sources[0].query.get('since'), 'a-0');
  env.sources[0].emit('subscribed', { topics: ['a'], positions: { a: 'a-0' } });
  assert.equal(sb.state, 'open');
  // a long-lived WebSocket that drops is simply reconnected
  const second = setup({ reconnect: { min: 100, stable: 5000 } });
  second.sb.subscribe('a');
  second.clock.tick(0);
  wsOpen(second.env, { a: 'a-0' });
  second.clock.tick(6000);
  second.env.sockets[0].serverClose(1006);
  second.clock.tick(100);
  assert.equal(second.sb.transport, 'ws');
  assert.equal(second.env.sockets.length, 2);
  sb.close();
  second.sb.close();
});

test('on/off and the "message" event', () => {
  const { env, sb, clock } = setup();
  const seen = [];
  const fn = (m) => seen.push(m.id);
  sb.on('message', fn);
  sb.subscribe('a');
  clock.tick(0);
  const ws = wsOpen(env, { a: 'a-0' });
  ws.receive(Object.assign({ type: 'message' }, env_(1, 'a', 1)));
  sb.off('message', fn);
  ws.receive(Object.assign({ type: 'message' }, env_(2, 'a', 2)));
  assert.deepEqual(seen, ['a-1']);
  assert.throws(() => sb.on('state'), TypeError);
  sb.close();
});

test('positions refused by the gateway (bad_cursor) are reported as a reset and dropped', () => {
  const { env, sb, clock, log } = setup({ positions: { b: 'garbage' } });
  sb.subscribe('a');
  clock.tick(0);
  const ws = wsOpen(env, { a: 'a-0' });
  sb.subscribe('b');
  clock.tick(0);
  const sub = ws.frames('subscribe')[0];
  assert.equal(sub.since, 'garbage');
  ws.receive({ type: 'error', ref: sub.ref, code: 'bad_cursor', message: 'bad' });
  assert.deepEqual(log.reset, [{ topic: 'b', reason: 'bad_cursor' }]);
  assert.equal(log.error[0].code, 'bad_cursor');
  const again = ws.frames('subscribe')[1];
  assert.deepEqual(again.topics, ['b']);
  assert.equal(again.since, undefined);
  sb.close();
  // on poll the whole request is refused
  const p = setup({ positions: { a: 'garbage' } }, { ws: false, sse: false });
  p.sb.subscribe('a');
  p.clock.tick(0);
  assert.equal(p.env.xhrs[0].query.get('since'), 'garbage');
  p.env.xhrs[0].respond(400, { error: { code: 'bad_cursor', message: 'bad' } });
  assert.deepEqual(p.log.reset, [{ topic: 'a', reason: 'bad_cursor' }]);
  p.clock.tick(1000);
  const next = p.env.xhrs[p.env.xhrs.length - 1];
  assert.equal(next.query.get('since'), null);
  p.sb.close();
});
