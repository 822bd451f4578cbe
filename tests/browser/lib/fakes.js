'use strict';
// Fake timers and fake transports for unit tests of static/switchboard.js.

class FakeClock {
  constructor() { this.t = 1000000; this.seq = 0; this.timers = new Map(); }
  now() { return this.t; }
  setTimeout(fn, ms) {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms || 0), fn, id });
    return id;
  }
  clearTimeout(id) { this.timers.delete(id); }
  // Runs every timer due within `ms`, in time order (then creation order).
  tick(ms = 0) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const tm of this.timers.values()) {
        if (tm.at <= end && (!next || tm.at < next.at || (tm.at === next.at && tm.id < next.id))) next = tm;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = end;
  }
  pending() { return this.timers.size; }
}

function makeEnv() {
  const clock = new FakeClock();
  const sockets = [];
  const sources = [];
  const xhrs = [];

  class FakeWebSocket {
    constructor(url) {
      this.url = url; this.sent = []; this.readyState = 0; this.closedByClient = null;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      sockets.push(this);
    }
    send(text) { if (this.readyState !== 1) throw new Error('not open'); this.sent.push(JSON.parse(text)); }
    close(code) { this.closedByClient = code || 1005; this.readyState = 3; }
    // test helpers
    serverOpen() { this.readyState = 1; this.onopen && this.onopen({}); }
    receive(frame) { this.onmessage && this.onmessage({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) }); }
    serverClose(code = 1006, reason = '') {
      this.readyState = 3;
      this.onerror && this.onerror({});
      this.onclose && this.onclose({ code, reason });
    }
    frames(type) { return this.sent.filter((f) => f.type === type); }
    get query() { return new URL(this.url).searchParams; }
  }

  class FakeEventSource {
    constructor(url, init) {
      this.url = url; this.init = init; this.readyState = 0; this.listeners = {}; this.onerror = null; this.closed = false;
      sources.push(this);
    }
    addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
    close() { this.closed = true; this.readyState = 2; }
    emit(type, data, id) {
      this.readyState = 1;
      for (const fn of this.listeners[type] || []) fn({ type, data: typeof data === 'string' ? data : JSON.stringify(data), lastEventId: id || '' });
    }
    fail() { this.readyState = 0; this.onerror && this.onerror({}); }
    get query() { return new URL(this.url).searchParams; }
  }

  class FakeXHR {
    constructor() { this.headers = {}; this.readyState = 0; this.status = 0; this.responseText = ''; this.aborted = false; xhrs.push(this); }
    open(method, url) { this.method = method; this.url = url; this.readyState = 1; }
    setRequestHeader(k, v) { this.headers[k.toLowerCase()] = v; }
    send(body) { this.body = body; this.sentAt = clock.now(); }
    abort() { this.aborted = true; this.readyState = 4; this.status = 0; this.onreadystatechange && this.onreadystatechange(); }
    respond(status, body, headers = {}) {
      this.readyState = 4; this.status = status;
      this.responseText = typeof body === 'string' ? body : JSON.stringify(body);
      this.responseHeaders = headers;
      this.onreadystatechange && this.onreadystatechange();
    }
    getResponseHeader(name) {
      const wanted = name.toLowerCase();
      for (const [k, v] of Object.entries(this.responseHeaders || {})) if (k.toLowerCase() === wanted) return v;
      return null;
    }
    networkError() { this.readyState = 4; this.status = 0; this.onreadystatechange && this.onreadystatechange(); }
    get done() { return this.readyState === 4; }
    get query() { return new URL(this.url).searchParams; }
    get path() { return new URL(this.url).pathname; }
  }

  const timers = {
    setTimeout: (fn, ms) => clock.setTimeout(fn, ms),
    clearTimeout: (id) => clock.clearTimeout(id),
    now: () => clock.now(),
  };
  return { clock, sockets, sources, xhrs, FakeWebSocket, FakeEventSource, FakeXHR, timers };
}

module.exports = { FakeClock, makeEnv };
