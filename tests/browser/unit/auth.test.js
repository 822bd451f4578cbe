'use strict';
// Unit tests of the client's tokens (static/switchboard.js): reading `exp`, when the next token
// is fetched, and how each transport carries, refreshes and recovers its token. Fake transports
// and fake timers.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const Switchboard = require(path.join(__dirname, '..', '..', '..', 'static', 'switchboard.js'));
const { makeEnv } = require('../lib/fakes');

const BASE = 'http://gw.test';
const b64 = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
// Tokens for the client's eyes only: it reads the payload and never checks the signature.
const jwt = (payload) => `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.c2lnbmF0dXJl`;

// A token issued at `nowMs` (fake clock) that lasts `seconds`.
function tokenFor(nowMs, seconds, extra = {}) {
  const iat = Math.floor(nowMs / 1000);
  return jwt(Object.assign({ sub: 'ann', iat, exp: iat + seconds }, extra));
}

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
  const sb = Switchboard.connect(BASE, opts);
  const log = { state: [], transport: [], error: [] };
  sb.on('state', (s) => log.state.push(s));
  sb.on('transport', (t) => log.transport.push(t));
  sb.on('error', (e) => log.error.push(e));
  return { env, sb, log, clock: env.clock };
}

// A token function that answers at once with the tokens it is given, one per call, counting.
function tokens(list) {
  const fn = (cb) => {
    fn.calls++;
    const next = list[Math.min(fn.calls - 1, list.length - 1)];
    if (next instanceof Error) cb(next); else cb(null, typeof next === 'function' ? next() : next);
  };
  fn.calls = 0;
  return fn;
}

const last = (list) => list[list.length - 1];

test('jwtPayload reads the payload of a JWT without verifying it, UTF-8 included', () => {
  const payload = { sub: 'Zoë ☃', exp: 1796000000, iat: 1795996400, switchboard: { subscribe: ['room.*'] } };
  assert.deepEqual(Switchboard.jwtPayload(jwt(payload)), payload);
  // base64url characters (- and _) and missing padding
  const odd = { s: '>>>???~~~' };
  assert.match(b64(odd), /[-_]/);
  assert.deepEqual(Switchboard.jwtPayload(jwt(odd)), odd);
  // plain base64 with padding is read too
  const padded = `x.${Buffer.from(JSON.stringify({ exp: 5 })).toString('base64')}.y`;
  assert.deepEqual(Switchboard.jwtPayload(padded), { exp: 5 });
  for (const bad of [null, 42, '', 'opaque-key', 'a.b', 'a.b.c.d', `x.${b64('not json')}.y`, `x.${b64('[1]')}.y`,
    'x.!!!.y', `x.${b64({ a: 1 })}a.y`, `x.${Buffer.from([0xff, 0xfe]).toString('base64url')}.y`]) {
    assert.equal(Switchboard.jwtPayload(bad), null, String(bad));
  }
});

test('refreshDelay: 90 % of the lifetime or 30 s before the end, whichever is earlier', () => {
  const now = 1795996400 * 1000;
  const at = (seconds, extra = {}) => Switchboard.refreshDelay(Object.assign({ iat: 1795996400, exp: 1795996400 + seconds }, extra), now);
  assert.equal(at(3600), 3240 * 1000, '1 h: at 90 %, 6 min before the end');
  assert.equal(at(600), 540 * 1000, '10 min: at 90 %, 60 s before the end');
  assert.equal(at(120), 90 * 1000, '2 min: 30 s before the end');
  assert.equal(at(60), 30 * 1000, '1 min: 30 s before the end, which is half of it');
  assert.equal(at(40), 20 * 1000, 'short tokens: not before half their lifetime');
  assert.equal(at(6), 3000);
  assert.equal(at(1), 1000, 'never within 1 s');
  assert.equal(at(365 * 86400 * 10), 2147483647, 'capped at what setTimeout takes');
  // the lifetime is measured from iat, whatever the page's clock says...
  assert.equal(Switchboard.refreshDelay({ iat: 100, exp: 700 }, now), 540 * 1000);
  // ...and from the page's clock without iat
  assert.equal(Switchboard.refreshDelay({ exp: 1795996400 + 600 }, now), 540 * 1000);
  assert.equal(Switchboard.refreshDelay({ exp: 1795996400 + 600, iat: 'x' }, now), 540 * 1000);
  // nothing to schedule: no exp, or already over
  assert.equal(Switchboard.refreshDelay({ sub: 'ann' }, now), null);
  assert.equal(Switchboard.refreshDelay(null, now), null);
  assert.equal(Switchboard.refreshDelay({ exp: 1795996400 - 1 }, now), null);
  assert.equal(Switchboard.refreshDelay({ exp: '1795996500' }, now), null);
});

test('the token option must be a string or a function', () => {
  assert.throws(() => setup({ token: 42 }), /options.token/);
  assert.throws(() => setup({ token: {} }), /options.token/);
});

test('WebSocket: the token goes in an auth frame right after open, before the in-band subscribe, never in the URL', () => {
  const token = jwt({ sub: 'ann' });
  const { env, sb, clock, log } = setup({ token, positions: { chat: 'chat-4' } });
  sb.subscribe('chat');
  clock.tick(0);
  const ws = env.sockets[0];
  assert.equal(ws.url, 'ws://gw.test/ws', 'no topic, cursor or token in the URL');
  ws.serverOpen();
  assert.deepEqual(ws.sent.map((f) => f.type), ['auth', 'subscribe']);
  assert.equal(ws.sent[0].token, token);
  assert.deepEqual(ws.sent[1].topics, ['chat']);
  assert.equal(ws.sent[1].since, 'chat-4');
  assert.equal(sb.state, 'connecting', 'not open before the subscription is confirmed');
  ws.receive({ type: 'ack', ref: ws.sent[0].ref, expires: null });
  ws.receive({ type: 'subscribed', ref: ws.sent[1].ref, topics: ['chat'], positions: { chat: 'chat-4' } });
  assert.equal(sb.state, 'open');
  assert.deepEqual(log.error, []);
  sb.close();
});

test('WebSocket with no topics opens on the auth ack; publishes follow it', () => {
  const { env, sb, clock } = setup({ token: 'tok' });
  let result;
  sb.publish('chat', 1, (err, id) => { result = err ? err.code : id; });
  clock.tick(0);
  const ws = env.sockets[0];
  ws.serverOpen();
  assert.deepEqual(ws.sent.map((f) => f.type), ['auth']);
  ws.receive({ type: 'ack', ref: ws.sent[0].ref });
  assert.equal(sb.state, 'open');
  assert.deepEqual(ws.sent.map((f) => f.type), ['auth', 'publish']);
  ws.receive({ type: 'ack', ref: ws.sent[1].ref, id: 'chat-1' });
  assert.equal(result, 'chat-1');
  sb.close();
});

test('WebSocket: the token function is asked before connecting and again before exp, sent in-band on the same socket', () => {
  const env0 = makeEnv();
  const fn = tokens([() => tokenFor(env0.clock.now(), 60), () => tokenFor(env0.clock.now(), 60)]);
  const { env, sb, clock, log } = setup({ token: fn });
  sb.subscribe('chat');
  clock.tick(0);
  assert.equal(fn.calls, 1);
  const ws = env.sockets[0];
  ws.serverOpen();
  ws.receive({ type: 'ack', ref: ws.sent[0].ref });
  ws.receive({ type: 'subscribed', ref: ws.sent[1].ref, topics: ['chat'], positions: { chat: 'chat-0' } });
  const first = ws.sent[0].token;
  const keepAlive = () => ws.receive({ type: 'pong', ref: 'idle' });
  for (let i = 0; i < 29; i++) { clock.tick(1000); keepAlive(); }
  assert.equal(fn.calls, 1, 'not before 30 s of a 60 s token');
  clock.tick(1000);
  assert.equal(fn.calls, 2);
  const auths = ws.frames('auth');
  assert.equal(auths.length, 2);
  assert.notEqual(auths[1].token, undefined);
  assert.notEqual(auths[1].ref, auths[0].ref);
  ws.receive({ type: 'ack', ref: auths[1].ref });
  assert.equal(env.sockets.length, 1, 'the same connection');
  assert.equal(sb.state, 'open');
  assert.deepEqual(log.state, ['open']);
  assert.equal(first, auths[0].token);
  // and the next one 30 s later again
  for (let i = 0; i < 30; i++) { clock.tick(1000); keepAlive(); }
  assert.equal(fn.calls, 3);
  assert.equal(ws.frames('auth').length, 3);
  sb.close();
  assert.equal(clock.pending(), 0, 'close() stops the refresh timer');
});

test('WebSocket: token_expired (error frame, close 4001) brings a fresh token and a reconnect with the cursor, no fallback', () => {
  const { env, sb, clock, log } = setup({ token: tokens(['t1', 't2']) });
  sb.subscribe('chat');
  clock.tick(0);
  let ws = env.sockets[0];
  ws.serverOpen();
  ws.receive({ type: 'subscribed', ref: ws.sent[1].ref, topics: ['chat'], positions: { chat: 'chat-0' } });
  ws.receive({ type: 'message', topic: 'chat', id: 'chat-1', data: 1, time: 1 });
  ws.receive({ type: 'error', code: 'token_expired', message: 'the token has expired' });
  ws.serverClose(4001, 'token expired');
  assert.equal(log.error.length, 1);
  assert.equal(log.error[0].code, 'token_expired');
  assert.equal(log.error[0].transport, 'ws');
  assert.equal(env.sockets.length, 2, 'reconnected at once');
  assert.equal(env.sources.length, 0, 'not SSE');
  ws = env.sockets[1];
  ws.serverOpen();
  assert.equal(ws.sent[0].token, 't2');
  assert.equal(ws.sent[1].since, 'chat-1');
  ws.receive({ type: 'subscribed', ref: ws.sent[1].ref, topics: ['chat'], positions: { chat: 'chat-1' } });
  assert.equal(sb.state, 'open');
  assert.deepEqual(log.transport, ['ws']);
  // a close 4001 alone counts the same
  ws.serverClose(4001, 'token expired');
  assert.equal(log.error[1].code, 'token_expired');
  assert.equal(env.sockets.length, 3);
  sb.close();
});

test('WebSocket: a refused token is retried once with a fresh one, then reported and the client closes', () => {
  const fn = tokens(['bad1', 'bad2']);
  const { env, sb, clock, log } = setup({ token: fn });
  const results = [];
  sb.subscribe('chat');
  sb.publish('chat', 1, (err) => results.push(err && err.code));
  clock.tick(0);
  for (let i = 0; i < 2; i++) {
    const ws = env.sockets[i];
    ws.serverOpen();
    ws.receive({ type: 'error', ref: ws.sent[0].ref, code: 'unauthorized', message: 'bad signature' });
  }
  assert.equal(fn.calls, 2);
  assert.equal(sb.state, 'closed');
  assert.deepEqual(log.error.map((e) => e.code), ['unauthorized', 'unauthorized']);
  assert.deepEqual(log.transport, ['ws'], 'no fallback');
  clock.tick(60000);
  assert.equal(env.sockets.length, 2, 'no more attempts');
  assert.deepEqual(results, ['closed']);
});

test('WebSocket: a forbidden topic is reported with its topics and the client closes at once', () => {
  const fn = tokens(['t1']);
  const { env, sb, clock, log } = setup({ token: fn });
  sb.subscribe('secret');
  clock.tick(0);
  const ws = env.sockets[0];
  ws.serverOpen();
  ws.receive({ type: 'ack', ref: ws.sent[0].ref });
  ws.receive({ type: 'error', ref: ws.sent[1].ref, code: 'forbidden', message: 'these credentials do not allow you to subscribe to `secret`' });
  assert.equal(sb.state, 'closed');
  assert.equal(log.error.length, 1);
  assert.equal(log.error[0].code, 'forbidden');
  assert.deepEqual(log.error[0].topics, ['secret']);
  assert.equal(fn.calls, 1);
  clock.tick(60000);
  assert.equal(env.sockets.length, 1);
  assert.equal(env.sources.length, 0);
});

test('WebSocket: a new token that no longer covers a topic (unsubscribed without ref) is reported', () => {
  const { env, sb, clock, log } = setup({ token: 't1' });
  sb.subscribe('a').subscribe('b');
  clock.tick(0);
  const ws = env.sockets[0];
  ws.serverOpen();
  ws.receive({ type: 'subscribed', ref: ws.sent[1].ref, topics: ['a', 'b'], positions: { a: 'a-0', b: 'b-0' } });
  ws.receive({ type: 'unsubscribed', topics: ['b'] });
  assert.equal(sb.state, 'closed');
  assert.equal(log.error[0].code, 'forbidden');
  assert.deepEqual(log.error[0].topics, ['b']);
});

test('WebSocket: a logged-out token function (null) subscribes in-band; anonymous refusal is reported', () => {
  const fn = tokens([null]);
  const { env, sb, clock, log } = setup({ token: fn });
  sb.subscribe('private');
  clock.tick(0);
  for (let i = 0; i < 2; i++) {
    const ws = env.sockets[i];
    assert.equal(ws.url, 'ws://gw.test/ws');
    ws.serverOpen();
    assert.deepEqual(ws.sent.map((f) => f.type), ['subscribe']);
    ws.receive({ type: 'error', ref: ws.sent[0].ref, code: 'unauthorized', message: 'a token is needed' });
  }
  assert.equal(sb.state, 'closed');
  assert.deepEqual(log.error.map((e) => e.code), ['unauthorized', 'unauthorized']);
  assert.deepEqual(log.error[1].topics, ['private']);
});

test('WebSocket: a publish refused with token_expired is sent again once, after a fresh auth', () => {
  const fn = tokens(['t1', 't2']);
  const { env, sb, clock } = setup({ token: fn });
  const results = [];
  clock.tick(0);
  const ws = env.sockets[0];
  ws.serverOpen();
  ws.receive({ type: 'ack', ref: ws.sent[0].ref });
  sb.publish('chat', 'x', (err, id) => results.push(err ? err.code : id));
  const p1 = ws.frames('publish')[0];
  ws.receive({ type: 'error', ref: p1.ref, code: 'token_expired', message: 'expired' });
  assert.deepEqual(ws.sent.slice(-2).map((f) => f.type), ['auth', 'publish'], 'auth first, then the publish again');
  assert.equal(ws.sent[ws.sent.length - 2].token, 't2');
  const p2 = ws.frames('publish')[1];
  ws.receive({ type: 'error', ref: p2.ref, code: 'token_expired', message: 'expired' });
  assert.deepEqual(results, ['token_expired'], 'only once');
  sb.close();
});

test('token function failures: reported as token_error, asked again after the backoff; promises work too', () => {
  let calls = 0;
  let pendingCb = null;
  const fn = (cb) => {
    calls++;
    if (calls === 1) cb(new Error('backend down'));
    else if (calls === 2) throw new Error('oops');
    else if (calls === 3) cb(null, 42);
    else if (calls === 4) pendingCb = cb; // never answers
    else return Promise.resolve('from-a-promise');
  };
  const { env, sb, clock, log } = setup({ token: fn, reconnect: { min: 100, max: 100 }, timeouts: { connect: 2000 } });
  sb.subscribe('chat');
  clock.tick(0);
  assert.equal(calls, 1);
  assert.equal(log.error[0].code, 'token_error');
  assert.match(log.error[0].message, /backend down/);
  assert.equal(env.sockets.length, 0);
  clock.tick(100);
  assert.equal(calls, 2);
  assert.match(log.error[1].message, /oops/);
  clock.tick(100);
  assert.equal(calls, 3);
  assert.match(log.error[2].message, /non-empty string/);
  clock.tick(100);
  assert.equal(calls, 4);
  clock.tick(2000);
  assert.equal(log.error[3].code, 'token_error');
  assert.match(log.error[3].message, /did not call back/);
  pendingCb(null, 'too-late'); // ignored
  assert.equal(env.sockets.length, 0);
  assert.deepEqual(log.transport, ['ws'], 'a token error is no reason to change transport');
  clock.tick(100);
  assert.equal(calls, 5);
  return Promise.resolve().then(() => {
    clock.tick(0);
    assert.equal(env.sockets.length, 1);
    env.sockets[0].serverOpen();
    assert.equal(env.sockets[0].sent[0].token, 'from-a-promise');
    sb.close();
  });
});

test('SSE: with queryToken the token is access_token in the URL; a refresh restarts the stream with the cursor', () => {
  const env0 = makeEnv();
  const fn = tokens([() => tokenFor(env0.clock.now(), 10), () => tokenFor(env0.clock.now(), 10, { n: 2 })]);
  const { env, sb, clock, log } = setup({ token: fn, queryToken: true }, { ws: false });
  sb.subscribe('chat');
  clock.tick(0);
  let es = env.sources[0];
  const t1 = es.query.get('access_token');
  assert.equal(Switchboard.jwtPayload(t1).sub, 'ann');
  es.emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-0' } });
  es.emit('message', { topic: 'chat', id: 'chat-1', data: 1, time: 1 });
  clock.tick(4999);
  assert.equal(env.sources.length, 1);
  clock.tick(1);
  assert.equal(fn.calls, 2, 'half of a 10 s token');
  assert.equal(env.sources.length, 2);
  assert.equal(es.closed, true);
  es = env.sources[1];
  assert.notEqual(es.query.get('access_token'), t1);
  assert.equal(es.query.get('since'), 'chat-1');
  es.emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-1' } });
  assert.deepEqual(log.state, ['open'], 'stays open through the refresh');
  assert.deepEqual(log.error, []);
  sb.close();
});

test('SSE: the gateway\'s event: error token_expired brings a fresh token and a reconnect', () => {
  const fn = tokens(['t1', 't2']);
  const { env, sb, clock, log } = setup({ token: fn, queryToken: true }, { ws: false });
  sb.subscribe('chat');
  clock.tick(0);
  const es = env.sources[0];
  es.emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-3' } });
  // EventSource hands an `event: error` to onerror as a MessageEvent with data
  es.onerror({ type: 'error', data: JSON.stringify({ code: 'token_expired', message: 'expired' }) });
  assert.equal(log.error[0].code, 'token_expired');
  assert.equal(env.sources.length, 2);
  assert.equal(env.sources[1].query.get('access_token'), 't2');
  assert.equal(env.sources[1].query.get('since'), 'chat-3');
  assert.equal(env.xhrs.length, 0, 'no fallback to poll');
  sb.close();
});

test('SSE: without queryToken no token in the URL (the cookie carries it); a refused stream is probed, and not left for poll', () => {
  const { env, sb, clock, log } = setup({ token: 'tok' }, { ws: false });
  sb.subscribe('chat');
  clock.tick(0);
  const es = env.sources[0];
  assert.equal(es.url, 'http://gw.test/events?topic=chat');
  es.fail();
  assert.equal(env.xhrs.length, 1, 'the same request through XMLHttpRequest');
  const probe = env.xhrs[0];
  assert.equal(probe.url, es.url);
  assert.equal(probe.headers.authorization, undefined, 'as EventSource sends it');
  probe.respond(403, { error: { code: 'forbidden', message: 'these credentials do not allow you to subscribe to `chat`' } });
  assert.equal(sb.state, 'closed');
  assert.equal(log.error[0].code, 'forbidden');
  assert.equal(log.error[0].status, 403);
  assert.deepEqual(log.error[0].topics, ['chat']);
  assert.deepEqual(log.transport, ['sse']);
});

test('SSE: a probe that finds a working stream (or none at all) falls back as before', () => {
  const { env, sb, clock, log } = setup({ token: 'tok' }, { ws: false });
  sb.subscribe('chat');
  clock.tick(0);
  env.sources[0].fail();
  const probe = env.xhrs[0];
  probe.readyState = 2; probe.status = 200; probe.onreadystatechange();
  assert.equal(probe.aborted, true);
  assert.equal(sb.transport, 'poll');
  assert.equal(log.error[0].code, 'closed');
  sb.close();
});

test('poll: Authorization: Bearer on every poll; a refreshed token is used from the next poll on', () => {
  const env0 = makeEnv();
  const fn = tokens([() => tokenFor(env0.clock.now(), 10), () => tokenFor(env0.clock.now(), 10, { n: 2 })]);
  const { env, sb, clock, log } = setup({ token: fn, timeouts: { poll: 8000 } }, { ws: false, sse: false });
  sb.subscribe('chat');
  clock.tick(0);
  const first = env.xhrs[0];
  const t1 = first.headers.authorization;
  assert.match(t1, /^Bearer ey/);
  assert.equal(first.query.get('access_token'), null);
  first.respond(200, { messages: [], positions: { chat: 'chat-0' }, reset: [], more: false });
  assert.equal(env.xhrs[1].headers.authorization, t1);
  clock.tick(5000);
  assert.equal(fn.calls, 2);
  assert.equal(env.xhrs.length, 2, 'the held poll is not interrupted');
  env.xhrs[1].respond(200, { messages: [{ topic: 'chat', id: 'chat-1', data: 1, time: 1 }], positions: { chat: 'chat-1' }, reset: [], more: false });
  assert.notEqual(env.xhrs[2].headers.authorization, t1);
  assert.equal(env.xhrs[2].query.get('since'), 'chat-1');
  assert.deepEqual(log.state, ['open']);
  sb.close();
});

test('poll: 401 token_expired brings a fresh token and the same cursor; a second one in a row closes', () => {
  const fn = tokens(['t1', 't2', 't3']);
  const { env, sb, clock, log } = setup({ token: fn }, { ws: false, sse: false });
  sb.subscribe('chat');
  clock.tick(0);
  env.xhrs[0].respond(200, { messages: [], positions: { chat: 'chat-5' }, reset: [], more: false });
  env.xhrs[1].respond(401, { error: { code: 'token_expired', message: 'expired' } });
  assert.equal(env.xhrs[2].headers.authorization, 'Bearer t2');
  assert.equal(env.xhrs[2].query.get('since'), 'chat-5');
  env.xhrs[2].respond(401, { error: { code: 'token_expired', message: 'expired' } });
  assert.equal(sb.state, 'closed', 'a fresh token refused at once: the token function is not giving good tokens');
  assert.deepEqual(log.error.map((e) => e.code + '/' + e.status), ['token_expired/401', 'token_expired/401']);
  assert.deepEqual(log.transport, ['poll']);
});

test('HTTP publish: Bearer token; token_expired is retried once with a fresh token, in order', () => {
  const fn = tokens(['t1', 't2']);
  const { env, sb, clock } = setup({ token: fn }, { ws: false });
  const results = [];
  clock.tick(0);
  assert.equal(sb.state, 'open', 'SSE without topics');
  sb.publish('chat', 1, (err, id) => results.push(err ? err.code : id));
  sb.publish('chat', 2, (err, id) => results.push(err ? err.code : id));
  assert.equal(env.xhrs.length, 1);
  assert.equal(env.xhrs[0].headers.authorization, 'Bearer t1');
  env.xhrs[0].respond(401, { error: { code: 'token_expired', message: 'expired' } });
  assert.equal(fn.calls, 2);
  assert.equal(env.xhrs[1].headers.authorization, 'Bearer t2');
  assert.equal(env.xhrs[1].body, '1', 'the refused one first');
  env.xhrs[1].respond(200, { id: 'chat-1' });
  assert.equal(env.xhrs[2].body, '2');
  env.xhrs[2].respond(200, { id: 'chat-2' });
  assert.deepEqual(results, ['chat-1', 'chat-2']);
  sb.close();
});

const RATE_LIMITED = { error: { code: 'rate_limited', message: 'too many subscribe requests from your address' } };

test('a stream refused for the address\'s connect rate (seen by the probe) is not left for poll: SSE is tried again after Retry-After', () => {
  const { env, sb, clock, log } = setup({ token: 'tok' }, { ws: false });
  sb.subscribe('chat');
  clock.tick(0);
  env.sources[0].fail();
  env.xhrs[0].respond(429, RATE_LIMITED, { 'Retry-After': '7' });
  assert.equal(log.error[0].code, 'rate_limited');
  assert.equal(log.error[0].status, 429);
  assert.equal(log.error[0].retryAfter, 7);
  assert.equal(sb.state, 'connecting');
  assert.equal(env.xhrs.length, 1, 'no poll: the transport is not at fault');
  clock.tick(6999);
  assert.equal(env.sources.length, 1, 'nothing before the gateway allows it');
  clock.tick(1);
  assert.equal(env.sources.length, 2);
  env.sources[1].emit('subscribed', { topics: ['chat'], positions: { chat: 'chat-0' } });
  assert.equal(sb.state, 'open');
  assert.deepEqual(log.transport, ['sse']);
  sb.close();
});

test('rate limited at connect, seen only by the poll: the next round waits for Retry-After and starts again from WebSocket', () => {
  const { env, sb, clock, log } = setup();
  sb.subscribe('chat');
  clock.tick(0);
  // A browser sees no reason for a refused WebSocket handshake or (without a token to probe
  // for) event stream; the poll's answer gives it.
  env.sockets[0].serverClose(1006);
  env.sources[0].fail();
  assert.equal(env.xhrs[0].path, '/poll');
  env.xhrs[0].respond(429, RATE_LIMITED, { 'Retry-After': '4' });
  assert.equal(last(log.error).code, 'rate_limited');
  clock.tick(3999);
  assert.equal(env.sockets.length, 1, 'not at the first backoff (500 ms): the gateway said 4 s');
  clock.tick(1);
  assert.equal(env.sockets.length, 2, 'WebSocket first again');
  const socket = env.sockets[1];
  socket.serverOpen();
  socket.receive({ type: 'subscribed', topics: ['chat'], positions: { chat: 'chat-0' } });
  assert.equal(sb.transport, 'ws');
  sb.close();
});

test('a gateway that is shutting down, full, or without its broker is not left for another transport: the next round follows the backoff', () => {
  for (const [status, code] of [[503, 'shutting_down'], [503, 'too_many_connections'], [503, 'broker_unavailable']]) {
    const { env, sb, clock, log } = setup({ token: 'tok' }, { ws: false });
    sb.subscribe('chat');
    clock.tick(0);
    env.sources[0].fail();
    env.xhrs[0].respond(status, { error: { code, message: code } });
    assert.equal(last(log.error).code, code);
    assert.equal(env.xhrs.length, 1, `${code}: no poll, which would be refused alike`);
    clock.tick(499);
    assert.equal(env.sources.length, 1, code);
    clock.tick(1);
    assert.equal(env.sources.length, 2, `${code}: SSE again after the first backoff`);
    sb.close();
  }
});

test('a poll refused for the connect rate waits for Retry-After and polls again with the same cursor', () => {
  const { env, sb, clock, log } = setup({}, { ws: false, sse: false });
  sb.subscribe('chat');
  clock.tick(0);
  env.xhrs[0].respond(200, { messages: [], positions: { chat: 'chat-4' }, reset: [], more: false });
  env.xhrs[1].respond(429, RATE_LIMITED, { 'retry-after': '2' });
  assert.equal(log.error[0].retryAfter, 2);
  clock.tick(1999);
  assert.equal(env.xhrs.length, 2);
  clock.tick(1);
  assert.equal(env.xhrs.length, 3);
  assert.equal(env.xhrs[2].query.get('since'), 'chat-4');
  sb.close();
});

test('a publish refused for the publish rate says when to try again: retryAfter from Retry-After over HTTP, from retry_after on WebSocket', () => {
  const http = setup({}, { ws: false });
  const results = [];
  http.clock.tick(0);
  http.sb.publish('chat', 1, (err) => results.push([err.code, err.status, err.retryAfter]));
  http.env.xhrs[0].respond(429, { error: { code: 'rate_limited', message: 'over publish_rate' } }, { 'Retry-After': '3' });
  http.sb.close();

  const ws = setup();
  ws.clock.tick(0);
  const socket = ws.env.sockets[0];
  socket.serverOpen();
  socket.receive({ type: 'pong', ref: socket.frames('ping')[0].ref });
  ws.sb.publish('chat', 2, (err) => results.push([err.code, err.status, err.retryAfter]));
  const frame = socket.frames('publish')[0];
  socket.receive({ type: 'error', ref: frame.ref, code: 'rate_limited', message: 'over publish_rate', retry_after: 5 });
  assert.equal(ws.sb.state, 'open', 'the connection stays');
  ws.sb.close();
  assert.deepEqual(results, [['rate_limited', 429, 3], ['rate_limited', undefined, 5]]);
});

test('without the token option nothing changes: topics in the WebSocket URL, no auth frame, no header', () => {
  const { env, sb, clock } = setup({}, {});
  sb.subscribe('chat');
  clock.tick(0);
  assert.equal(env.sockets[0].url, 'ws://gw.test/ws?topic=chat');
  env.sockets[0].serverOpen();
  assert.deepEqual(env.sockets[0].sent.map((f) => f.type), ['ping']);
  sb.close();
  const poll = setup({}, { ws: false, sse: false });
  poll.sb.subscribe('chat');
  poll.clock.tick(0);
  assert.equal(poll.env.xhrs[0].headers.authorization, undefined);
  poll.sb.close();
});
