/*!
 * switchboard.js - browser client for the Switchboard pub/sub gateway.
 * Dependency-free ES5: WebSocket, then Server-Sent Events, then long-poll, with
 * automatic fallback, reconnection and loss-free resume. See docs/CLIENT.md.
 */
(function (root, factory) {
  var lib = factory(root);
  if (typeof define === 'function' && define.amd) {
    define([], function () { return lib; });
  }
  if (typeof module === 'object' && module && module.exports) {
    module.exports = lib;
  } else if (root) {
    root.Switchboard = lib;
  }
}(typeof window !== 'undefined' ? window :
  typeof self !== 'undefined' ? self :
  typeof global !== 'undefined' ? global : this, function (GLOBAL) {
  'use strict';

  var VERSION = '0.1.0';
  var TRANSPORTS = ['ws', 'sse', 'poll'];
  var TOPIC_RE = /^[A-Za-z0-9._\-:@\/]{1,128}$/;
  var SEEN_PER_TOPIC = 1000;
  var REFRESH_AHEAD = 30;        // s: a token is replaced at least this long before it ends...
  var REFRESH_FRACTION = 0.9;    // ...or at this fraction of its lifetime, whichever is earlier
  var MAX_TIMER = 2147483647;    // ms: the longest delay setTimeout takes
  var B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

  var DEFAULTS = {
    transports: TRANSPORTS,
    params: null,
    positions: null,
    withCredentials: false,
    token: null,
    queryToken: false,
    publishQueue: 100,
    timeouts: {
      connect: 10000,  // ms to establish a transport (WS subscribed/pong, SSE `subscribed`, first poll reply)
      silence: 45000,  // ms without any frame on an open WebSocket before it is declared dead
      publish: 30000,  // ms from publish() to its ack before the callback gets `timeout`
      poll: 25000      // ms a long-poll is held by the server (sent as `timeout` in seconds)
    },
    reconnect: {
      min: 500,        // first reconnect delay, ms
      max: 15000,      // largest delay, ms
      factor: 2,       // growth per failed round
      jitter: 0.5,     // the delay is reduced by up to this fraction, at random
      retryBetter: 60000, // a failed transport is not retried for this long (doubling per failure)
      stable: 5000     // a connection that dies sooner than this counts as a transport failure
    }
  };

  // ---------------------------------------------------------------- helpers

  function noop() {}

  function hasOwn(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }

  function isArray(a) { return Object.prototype.toString.call(a) === '[object Array]'; }

  function indexOf(list, item) {
    for (var i = 0; i < list.length; i++) { if (list[i] === item) { return i; } }
    return -1;
  }

  function merge(defaults, given) {
    var out = {};
    var k;
    for (k in defaults) { if (hasOwn(defaults, k)) { out[k] = defaults[k]; } }
    if (given) {
      for (k in given) {
        if (hasOwn(given, k) && given[k] !== undefined) { out[k] = given[k]; }
      }
    }
    return out;
  }

  function makeError(code, message, extra) {
    var err = new Error(message);
    err.name = 'SwitchboardError';
    err.code = code;
    if (extra) {
      for (var k in extra) { if (hasOwn(extra, k) && extra[k] !== undefined) { err[k] = extra[k]; } }
    }
    return err;
  }

  function parseJson(text) {
    try { return JSON.parse(text); } catch (e) { return undefined; }
  }

  // Refusals for the gateway's state rather than the transport's (PROTOCOL.md, *Errors*): over
  // this address's `connect_rate`, shutting down, full (`max_connections`), or its broker (Redis,
  // the data directory) out of reach.
  var GATEWAY_REFUSALS = {
    rate_limited: true, shutting_down: true, too_many_connections: true, broker_unavailable: true
  };

  // The error of an HTTP answer other than 200, whose body is {"error":{"code":…,"message":…}}:
  // the gateway's code, the status, and (for `rate_limited`) `retryAfter`, the seconds of the
  // `Retry-After` header.
  function httpError(status, text, retryAfterHeader) {
    var body = parseJson(text);
    var e = body && body.error;
    var extra = { status: status };
    var retryAfter = seconds(retryAfterHeader);
    if (retryAfter !== null) { extra.retryAfter = retryAfter; }
    if (e && typeof e.code === 'string') {
      return makeError(e.code, String(e.message || e.code), extra);
    }
    return makeError('http_' + status, 'HTTP status ' + status, extra);
  }

  // A whole number of seconds (`Retry-After`, `retry_after`), or null.
  function seconds(value) {
    if (typeof value === 'number') { value = String(value); }
    if (typeof value !== 'string' || !/^\d+$/.test(value)) { return null; }
    return parseInt(value, 10);
  }

  function encodeQuery(topics, since, params, extra) {
    var parts = [];
    var i, k, v;
    for (i = 0; i < topics.length; i++) { parts.push('topic=' + encodeURIComponent(topics[i])); }
    if (since) { parts.push('since=' + encodeURIComponent(since)); }
    var lists = [extra, params];
    for (var j = 0; j < lists.length; j++) {
      var obj = lists[j];
      if (!obj) { continue; }
      for (k in obj) {
        if (!hasOwn(obj, k) || obj[k] === undefined || obj[k] === null) { continue; }
        v = isArray(obj[k]) ? obj[k] : [obj[k]];
        for (i = 0; i < v.length; i++) {
          parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(String(v[i])));
        }
      }
    }
    return parts.length ? '?' + parts.join('&') : '';
  }

  // Turns baseUrl into an absolute http(s) URL without a trailing slash.
  function resolveBase(base, loc) {
    base = base === undefined || base === null ? '' : String(base);
    base = base.replace(/\/+$/, '');
    if (/^wss?:\/\//i.test(base)) { base = base.replace(/^ws/i, 'http'); }
    if (/^https?:\/\//i.test(base)) { return base; }
    if (/^\/\//.test(base) && loc && loc.protocol) { return loc.protocol + base; }
    if (loc && loc.protocol && loc.host) {
      if (base && base.charAt(0) !== '/') { base = '/' + base; }
      return loc.protocol + '//' + loc.host + base;
    }
    return base;
  }

  function validTopic(topic) { return typeof topic === 'string' && TOPIC_RE.test(topic); }

  // ----------------------------------------------------------------- tokens

  // base64url (or base64) to a string of byte values; null if it is not base64.
  function base64UrlBytes(text) {
    text = text.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    if (text.length % 4 === 1) { return null; }
    var out = '';
    var bits = 0;
    var value = 0;
    for (var i = 0; i < text.length; i++) {
      var v = B64URL.indexOf(text.charAt(i));
      if (v < 0) { return null; }
      value = ((value << 6) | v) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out += String.fromCharCode((value >> bits) & 0xff);
      }
    }
    return out;
  }

  // The payload of a JWT, decoded but NOT verified (the gateway verifies it): the client only
  // reads `exp` and `iat` to know when to fetch the next token. null if `token` is not a JWT.
  function jwtPayload(token) {
    if (typeof token !== 'string') { return null; }
    var parts = token.split('.');
    if (parts.length !== 3) { return null; }
    var bytes = base64UrlBytes(parts[1]);
    if (bytes === null) { return null; }
    var text;
    try {
      // The payload is UTF-8: percent-encode its bytes and let the browser decode them.
      text = decodeURIComponent(bytes.replace(/[\s\S]/g, function (ch) {
        return '%' + ('0' + ch.charCodeAt(0).toString(16)).slice(-2);
      }));
    } catch (e) {
      return null;
    }
    var payload = parseJson(text);
    return payload && typeof payload === 'object' && !isArray(payload) ? payload : null;
  }

  // ms from now until a token with this payload is to be replaced: at 90 % of its lifetime or
  // 30 s before it ends, whichever is earlier, but not before half of it (short-lived tokens)
  // and not within 1 s. The lifetime runs from `iat` when the token has one (a page whose clock
  // is wrong still refreshes in time), else from now by the page's clock. null when the token
  // does not expire (no `exp`) or has already ended: the gateway will say `token_expired`.
  function refreshDelay(payload, nowMs) {
    if (!payload || typeof payload.exp !== 'number') { return null; }
    var issued = typeof payload.iat === 'number' && payload.iat < payload.exp ? payload.iat : nowMs / 1000;
    var life = payload.exp - issued;
    if (!(life > 0)) { return null; }
    var after = Math.max(life / 2, Math.min(life * REFRESH_FRACTION, life - REFRESH_AHEAD));
    return Math.min(MAX_TIMER, Math.max(1000, Math.round(after * 1000)));
  }

  // ----------------------------------------------------------------- client

  function Client(baseUrl, options) {
    options = options || {};
    var opts = merge(DEFAULTS, options);
    opts.timeouts = merge(DEFAULTS.timeouts, options.timeouts);
    opts.reconnect = merge(DEFAULTS.reconnect, options.reconnect);
    var wanted = typeof opts.transports === 'string' ? [opts.transports] : (opts.transports || TRANSPORTS);
    var transports = [];
    for (var i = 0; i < wanted.length; i++) {
      if (indexOf(TRANSPORTS, wanted[i]) >= 0 && indexOf(transports, wanted[i]) < 0) {
        transports.push(wanted[i]);
      }
    }
    if (!transports.length) {
      throw makeError('bad_option', 'no known transport in options.transports (use "ws", "sse", "poll")');
    }
    opts.transports = transports;
    this.options = opts;

    var timers = options.timers || {};
    var g = GLOBAL || {};
    this._setTimeout = timers.setTimeout || function (fn, ms) { return g.setTimeout(fn, ms); };
    this._clearTimeout = timers.clearTimeout || function (id) { return g.clearTimeout(id); };
    this._now = timers.now || function () { return new Date().getTime(); };
    this._random = options.random || Math.random;

    this.url = resolveBase(baseUrl, hasOwn(options, 'location') ? options.location : g.location);
    this.transport = null;
    this.state = 'connecting';
    this.positions = {};
    if (opts.positions) {
      for (var t in opts.positions) {
        if (hasOwn(opts.positions, t) && typeof opts.positions[t] === 'string') {
          this.positions[t] = opts.positions[t];
        }
      }
    }

    this._topics = [];        // subscribed topics, in subscription order
    this._handlers = {};      // topic -> [handler]
    this._listeners = {};     // event -> [fn]
    this._seen = {};          // topic -> {ids: {id: true}, order: [id]}
    this._outbox = [];        // queued publishes
    this._inflight = {};      // WS ref -> publish entry
    this._httpBusy = false;
    this._publishVia = null;  // 'ws' | 'http' | null (queue)
    this._seq = 0;
    this._conn = null;
    this._connSeq = 0;
    this._failures = {};      // transport -> {count, until}
    this._round = { failed: [] };
    this._rounds = 0;         // consecutive exhausted rounds, for the backoff
    this._everOpen = false;
    this._timer = null;       // reconnect / start timer
    this._upgradeTimer = null;
    this._stableTimer = null;
    this._syncTimer = null;
    this._token = null;       // the token function's last token (null: none, or the cookie)
    this._tokenStale = true;  // the function must be asked before the next use
    this._tokenWaiters = [];  // callbacks waiting for the token function; non-empty while it runs
    this._tokenTimer = null;  // fetches the next token before this one ends
    this._authStreak = 0;     // auth refusals since a connection last opened

    var t0 = opts.token;
    if (t0 !== null && typeof t0 !== 'string' && typeof t0 !== 'function') {
      throw makeError('bad_option', 'options.token must be a string or a function');
    }

    var self = this;
    this._timer = this._setTimeout(function () { self._timer = null; self._connect(self._pickNewRound()); }, 0);
  }

  Client.prototype.version = VERSION;

  // ------------------------------------------------------------ public API

  Client.prototype.on = function (event, fn) {
    if (typeof fn !== 'function') { throw new TypeError('Switchboard: on() needs a function'); }
    (this._listeners[event] || (this._listeners[event] = [])).push(fn);
    return this;
  };

  Client.prototype.off = function (event, fn) {
    var list = this._listeners[event];
    if (!list) { return this; }
    if (!fn) { delete this._listeners[event]; return this; }
    var i = indexOf(list, fn);
    if (i >= 0) { list.splice(i, 1); }
    return this;
  };

  Client.prototype.subscribe = function (topic, handler) {
    if (!validTopic(topic)) {
      throw makeError('bad_topic', 'Switchboard: invalid topic ' + JSON.stringify(topic) +
        ' (1-128 characters from A-Z a-z 0-9 . _ - : @ /)');
    }
    if (handler !== undefined && typeof handler !== 'function') {
      throw new TypeError('Switchboard: subscribe() handler must be a function');
    }
    if (this.state === 'closed') { throw makeError('closed', 'Switchboard: the client is closed'); }
    if (!hasOwn(this._handlers, topic)) {
      this._handlers[topic] = [];
      this._topics.push(topic);
      this._topicsChanged();
    }
    if (handler) { this._handlers[topic].push(handler); }
    return this;
  };

  Client.prototype.unsubscribe = function (topic, handler) {
    if (!hasOwn(this._handlers, topic)) { return this; }
    var list = this._handlers[topic];
    if (handler) {
      var i = indexOf(list, handler);
      if (i >= 0) { list.splice(i, 1); }
      if (list.length) { return this; }
    }
    delete this._handlers[topic];
    delete this.positions[topic];
    delete this._seen[topic];
    this._topics.splice(indexOf(this._topics, topic), 1);
    this._topicsChanged();
    return this;
  };

  Client.prototype.publish = function (topic, data, callback) {
    var self = this;
    var entry = {
      topic: topic,
      data: data === undefined ? null : data,
      callback: typeof callback === 'function' ? callback : null,
      done: false,
      timer: null
    };
    if (this.state === 'closed') {
      return this._failLater(entry, makeError('closed', 'Switchboard: the client is closed'));
    }
    if (!validTopic(topic)) {
      return this._failLater(entry, makeError('bad_topic', 'Switchboard: invalid topic ' + JSON.stringify(topic)));
    }
    try {
      entry.json = JSON.stringify(entry.data);
    } catch (e) {
      return this._failLater(entry, makeError('bad_json', 'Switchboard: data cannot be serialised: ' + e.message));
    }
    if (typeof entry.json !== 'string') {
      return this._failLater(entry, makeError('bad_json', 'Switchboard: data of type ' + typeof entry.data +
        ' cannot be sent as JSON'));
    }
    if (this._outbox.length >= this.options.publishQueue) {
      return this._failLater(entry, makeError('queue_full',
        'Switchboard: ' + this._outbox.length + ' publishes are already waiting for a connection'));
    }
    entry.timer = this._setTimeout(function () {
      entry.timer = null;
      var i = indexOf(self._outbox, entry);
      if (i >= 0) { self._outbox.splice(i, 1); }
      if (entry.ref) { delete self._inflight[entry.ref]; }
      self._finish(entry, makeError('timeout', 'Switchboard: publish to ' + topic + ' not acknowledged within ' +
        self.options.timeouts.publish + ' ms (state: ' + self.state + ')'));
    }, this.options.timeouts.publish);
    this._outbox.push(entry);
    this._pump();
    return this;
  };

  // The cursor for every subscribed topic (their positions joined with ".").
  Client.prototype.cursor = function (topics) {
    topics = topics || this._topics;
    var parts = [];
    for (var i = 0; i < topics.length; i++) {
      if (hasOwn(this.positions, topics[i])) { parts.push(this.positions[topics[i]]); }
    }
    return parts.join('.');
  };

  Client.prototype.topics = function () { return this._topics.slice(); };

  Client.prototype.close = function () {
    if (this.state === 'closed') { return this; }
    this._clearTimers();
    var err = makeError('closed', 'Switchboard: the client was closed');
    var pending = this._outbox.splice(0, this._outbox.length);
    for (var ref in this._inflight) { if (hasOwn(this._inflight, ref)) { pending.push(this._inflight[ref]); } }
    this._inflight = {};
    this._dropConn();
    this._publishVia = null;
    this._tokenWaiters = [];
    this._setState('closed');
    for (var i = 0; i < pending.length; i++) { this._finish(pending[i], err); }
    return this;
  };

  // --------------------------------------------------------------- events

  Client.prototype._emit = function (event, a, b) {
    var list = this._listeners[event];
    if (!list || !list.length) { return false; }
    list = list.slice();
    for (var i = 0; i < list.length; i++) { this._safeCall(list[i], a, b); }
    return true;
  };

  // A throwing application callback must not break the client: rethrow it on its own.
  Client.prototype._safeCall = function (fn, a, b) {
    try {
      fn.call(this, a, b);
    } catch (e) {
      this._setTimeout(function () { throw e; }, 0);
    }
  };

  Client.prototype._setState = function (state) {
    if (state === this.state) { return; }
    var prev = this.state;
    this.state = state;
    this._emit('state', state, prev);
  };

  Client.prototype._setTransport = function (t) {
    if (t === this.transport) { return; }
    var prev = this.transport;
    this.transport = t;
    this._emit('transport', t, prev);
  };

  Client.prototype._error = function (err) {
    this._emit('error', err);
  };

  // ------------------------------------------------------------ publishing

  Client.prototype._finish = function (entry, err, id) {
    if (entry.done) { return; }
    entry.done = true;
    if (entry.timer !== null) { this._clearTimeout(entry.timer); entry.timer = null; }
    if (entry.callback) {
      this._safeCall(entry.callback, err || null, id);
    } else if (err) {
      err.topic = entry.topic;
      this._error(err);
    }
  };

  Client.prototype._failLater = function (entry, err) {
    var self = this;
    this._setTimeout(function () { self._finish(entry, err); }, 0);
    return this;
  };

  Client.prototype._pump = function () {
    var self = this;
    // While a token is being fetched, publishes wait for it rather than go out with the old one.
    if (this.state !== 'open' || !this._conn || this._httpBusy || this._tokenWaiters.length) { return; }
    if (this._publishVia === 'ws') {
      var conn = this._conn;
      while (this._outbox.length) {
        var entry = this._outbox.shift();
        entry.ref = 'p' + (++this._seq);
        this._inflight[entry.ref] = entry;
        conn.send('{"type":"publish","topic":' + JSON.stringify(entry.topic) + ',"data":' + entry.json +
          ',"ref":"' + entry.ref + '"}');
      }
    } else if (this._publishVia === 'http' && this._outbox.length) {
      var e = this._outbox.shift();
      var path = this.transport === 'poll' ? '/poll' : '/events';
      var url = this.url + path + encodeQuery([e.topic], null, this.options.params);
      this._httpBusy = true;
      this._request('POST', url, e.json, this.options.timeouts.publish, function (err, status, text, retryAfter) {
        self._httpBusy = false;
        if (err) {
          err.message = 'Switchboard: publish to ' + e.topic + ' failed: ' + err.message;
          self._finish(e, err);
        } else if (status === 200) {
          var body = parseJson(text);
          self._finish(e, null, body && body.id);
        } else {
          self._refused(e, httpError(status, text, retryAfter));
        }
        if (self.state !== 'closed') { self._pump(); }
      });
    }
  };

  // A publish the gateway refused. One refused because the token ran out was not accepted, so
  // it is sent again, once, with a fresh token (ahead of the queue, keeping the tab's order).
  Client.prototype._refused = function (entry, err) {
    if (err.code === 'token_expired' && !entry.retried && this.options.token !== null &&
        this.state !== 'closed' && !entry.done) {
      entry.retried = true;
      this._outbox.unshift(entry);
      this._tokenStale = true;
      this._refreshToken();
      return;
    }
    this._finish(entry, err);
  };

  // HTTP requests carry the token in `Authorization: Bearer` (polls and publishes).
  Client.prototype._request = function (method, url, body, timeoutMs, cb) {
    var self = this;
    var XHR = this._lookup('XMLHttpRequest');
    var done = false;
    var timer = null;
    var xhr;
    function finish(err, status, text, retryAfter) {
      if (done) { return; }
      done = true;
      if (timer !== null) { self._clearTimeout(timer); timer = null; }
      cb(err, status, text, retryAfter);
    }
    if (!XHR) {
      this._setTimeout(function () { finish(makeError('unavailable', 'XMLHttpRequest is not available')); }, 0);
      return { abort: function () { done = true; } };
    }
    try {
      xhr = new XHR();
      xhr.open(method, url, true);
      if (body !== null) { xhr.setRequestHeader('Content-Type', 'application/json'); }
      var token = this._currentToken();
      if (token) { xhr.setRequestHeader('Authorization', 'Bearer ' + token); }
      if (this.options.withCredentials) { xhr.withCredentials = true; }
      xhr.onreadystatechange = function () {
        if (xhr.readyState !== 4 || done) { return; }
        if (!xhr.status) { finish(makeError('network', 'network error (' + method + ' ' + url + ')')); }
        else { finish(null, xhr.status, xhr.responseText, retryAfterOf(xhr)); }
      };
      timer = this._setTimeout(function () {
        timer = null;
        finish(makeError('timeout', 'no answer within ' + timeoutMs + ' ms (' + method + ' ' + url + ')'));
        try { xhr.abort(); } catch (e) { /* ignore */ }
      }, timeoutMs);
      xhr.send(body);
    } catch (e) {
      this._setTimeout(function () { finish(makeError('network', e.message || String(e))); }, 0);
    }
    return {
      abort: function () {
        if (done) { return; }
        done = true;
        if (timer !== null) { self._clearTimeout(timer); timer = null; }
        try { xhr.abort(); } catch (e) { /* ignore */ }
      }
    };
  };

  // The `Retry-After` header of a finished request, or null.
  function retryAfterOf(xhr) {
    try { return xhr.getResponseHeader('Retry-After'); } catch (e) { return null; }
  }

  // ---------------------------------------------------------------- tokens

  // The token in force: the string option, or the function's last one (null: none, or a cookie).
  Client.prototype._currentToken = function () {
    var source = this.options.token;
    return typeof source === 'string' ? source : (typeof source === 'function' ? this._token : null);
  };

  // Calls back (err, token) with the token to use: the string option; the function's last token
  // while it is current; else a fresh one from the function (one call at a time, shared by
  // everyone waiting). null without the option, or when the function gives none.
  Client.prototype._getToken = function (fresh, cb) {
    var source = this.options.token;
    if (typeof source !== 'function') {
      cb(null, typeof source === 'string' ? source : null);
      return;
    }
    if (!fresh && !this._tokenStale) {
      cb(null, this._token);
      return;
    }
    this._tokenWaiters.push(cb);
    if (this._tokenWaiters.length === 1) { this._fetchToken(); }
  };

  // Asks the token function. It calls back `(err, token)`, or returns a promise of the token;
  // whichever comes first counts, once.
  Client.prototype._fetchToken = function () {
    var self = this;
    var done = false;
    var ms = this.options.timeouts.connect;
    var timer = this._setTimeout(function () {
      timer = null;
      finish(makeError('token_error', 'Switchboard: the token function did not call back within ' + ms + ' ms'));
    }, ms);
    function failed(cause) {
      var text = cause && cause.message ? cause.message : String(cause);
      return makeError('token_error', 'Switchboard: the token function failed: ' + text, { cause: cause });
    }
    function finish(err, token) {
      if (done) { return; }
      done = true;
      if (timer !== null) { self._clearTimeout(timer); timer = null; }
      if (!err && token !== null && token !== undefined && (typeof token !== 'string' || !token)) {
        err = makeError('token_error', 'Switchboard: the token function must give a non-empty string, or null');
      }
      var waiters = self._tokenWaiters;
      self._tokenWaiters = [];
      if (self.state === 'closed') { return; }
      if (!err) { self._setToken(token === undefined ? null : token); }
      for (var i = 0; i < waiters.length; i++) { waiters[i](err, err ? null : self._token); }
    }
    try {
      var promise = this.options.token(function (err, token) { finish(err ? failed(err) : null, token); });
      if (promise && typeof promise.then === 'function') {
        promise.then(function (token) { finish(null, token); }, function (e) { finish(failed(e || 'rejected')); });
      }
    } catch (e) {
      finish(failed(e));
    }
  };

  // Keeps a fresh token, and fetches the next one before it ends.
  Client.prototype._setToken = function (token) {
    var self = this;
    this._token = token;
    this._tokenStale = false;
    if (this._tokenTimer !== null) { this._clearTimeout(this._tokenTimer); this._tokenTimer = null; }
    var delay = token ? refreshDelay(jwtPayload(token), this._now()) : null;
    if (delay === null) { return; }
    this._tokenTimer = this._setTimeout(function () {
      self._tokenTimer = null;
      self._refreshToken();
    }, delay);
  };

  // Fetches a fresh token and puts it to use: in-band on an open WebSocket, by restarting an SSE
  // stream that carries it in its URL (with its cursor); polls and HTTP publishes simply send
  // it from their next request on.
  Client.prototype._refreshToken = function () {
    var self = this;
    if (typeof this.options.token !== 'function' || this.state === 'closed') { return; }
    this._getToken(true, function (err, token) {
      if (self.state === 'closed') { return; }
      if (err) {
        // The connection goes on with the old token; when it ends, the reconnect asks again.
        err.transport = self.transport;
        self._error(err);
      } else {
        var conn = self._conn;
        if (conn && conn.opened && !conn.stopped) { conn.tokenChanged(token); }
      }
      self._pump();
    });
  };

  // ------------------------------------------------------------- receiving

  Client.prototype._deliver = function (env) {
    if (!env || typeof env.topic !== 'string' || typeof env.id !== 'string') { return; }
    var topic = env.topic;
    if (!hasOwn(this._handlers, topic)) { return; }
    var seen = this._seen[topic] || (this._seen[topic] = { ids: {}, order: [] });
    if (hasOwn(seen.ids, env.id)) { return; }
    seen.ids[env.id] = true;
    seen.order.push(env.id);
    if (seen.order.length > SEEN_PER_TOPIC) { delete seen.ids[seen.order.shift()]; }
    this.positions[topic] = env.id;
    var message = {};
    for (var k in env) { if (hasOwn(env, k) && k !== 'type') { message[k] = env[k]; } }
    var handlers = this._handlers[topic].slice();
    for (var i = 0; i < handlers.length; i++) { this._safeCall(handlers[i], message.data, message); }
    this._emit('message', message);
  };

  Client.prototype._onReset = function (reset) {
    if (!reset || typeof reset.topic !== 'string' || !hasOwn(this._handlers, reset.topic)) { return; }
    this._emit('reset', { topic: reset.topic, reason: reset.reason });
  };

  Client.prototype._setPositions = function (positions, topics) {
    if (!positions) { return; }
    for (var i = 0; i < topics.length; i++) {
      var t = topics[i];
      if (hasOwn(this._handlers, t) && typeof positions[t] === 'string') { this.positions[t] = positions[t]; }
    }
  };

  // ------------------------------------------------- connection management

  Client.prototype._lookup = function (name) {
    if (hasOwn(this.options, name)) { return this.options[name]; }
    return GLOBAL ? GLOBAL[name] : undefined;
  };

  Client.prototype._available = function () {
    var out = [];
    var need = { ws: 'WebSocket', sse: 'EventSource', poll: 'XMLHttpRequest' };
    for (var i = 0; i < this.options.transports.length; i++) {
      var t = this.options.transports[i];
      if (this._lookup(need[t])) { out.push(t); }
    }
    return out;
  };

  Client.prototype._demoted = function (t) {
    var f = this._failures[t];
    return !!f && f.until > this._now();
  };

  // Next transport within the current round: the best one that is neither demoted
  // nor already failed in this round.
  Client.prototype._pickNext = function () {
    var avail = this._available();
    for (var i = 0; i < avail.length; i++) {
      if (indexOf(this._round.failed, avail[i]) < 0 && !this._demoted(avail[i])) { return avail[i]; }
    }
    return null;
  };

  // First transport of a new round: as _pickNext, but if everything is demoted take the
  // one whose demotion ends first, so that no transport is retried forever.
  Client.prototype._pickNewRound = function () {
    var t = this._pickNext();
    if (t) { return t; }
    var avail = this._available();
    var candidates = [];
    for (var i = 0; i < avail.length; i++) {
      if (indexOf(this._round.failed, avail[i]) < 0) { candidates.push(avail[i]); }
    }
    if (!candidates.length) { candidates = avail; }
    var best = null;
    for (var j = 0; j < candidates.length; j++) {
      var f = this._failures[candidates[j]];
      if (!best || (f ? f.until : 0) < (this._failures[best] ? this._failures[best].until : 0)) {
        best = candidates[j];
      }
    }
    return best;
  };

  Client.prototype._clearTimers = function () {
    var names = ['_timer', '_upgradeTimer', '_stableTimer', '_syncTimer', '_tokenTimer'];
    for (var i = 0; i < names.length; i++) {
      if (this[names[i]] !== null) { this._clearTimeout(this[names[i]]); this[names[i]] = null; }
    }
  };

  Client.prototype._connect = function (transport) {
    if (this.state === 'closed') { return; }
    if (this._timer !== null) { this._clearTimeout(this._timer); this._timer = null; }
    if (!transport) {
      this._error(makeError('no_transport', 'Switchboard: none of the transports ' +
        this.options.transports.join(', ') + ' is available in this environment'));
      this.close();
      return;
    }
    this._dropConn();
    this._publishVia = null;
    if (this.state === 'open') { this._setState(this._everOpen ? 'reconnecting' : 'connecting'); }
    this._setTransport(transport);
    var conn = new Conn(this, transport, ++this._connSeq);
    this._conn = conn;
    conn.start();
  };

  Client.prototype._dropConn = function () {
    var conn = this._conn;
    if (!conn) { return; }
    this._conn = null;
    conn.stop();
    this._failInflight();
  };

  Client.prototype._failInflight = function () {
    var lost = [];
    for (var ref in this._inflight) { if (hasOwn(this._inflight, ref)) { lost.push(this._inflight[ref]); } }
    this._inflight = {};
    for (var i = 0; i < lost.length; i++) {
      this._finish(lost[i], makeError('connection_lost', 'Switchboard: the connection closed before the publish to ' +
        lost[i].topic + ' was acknowledged; it may or may not have been accepted'));
    }
  };

  Client.prototype._backoff = function (n) {
    var r = this.options.reconnect;
    var delay = Math.min(r.max, r.min * Math.pow(r.factor, n));
    return Math.max(0, Math.round(delay * (1 - r.jitter * this._random())));
  };

  Client.prototype._scheduleRound = function (delay) {
    var self = this;
    this._setState(this._everOpen ? 'reconnecting' : 'connecting');
    if (this._timer !== null) { this._clearTimeout(this._timer); }
    this._timer = this._setTimeout(function () {
      self._timer = null;
      self._connect(self._pickNewRound());
    }, delay);
  };

  Client.prototype._connOpened = function (conn, topics) {
    if (conn !== this._conn) { return; }
    var self = this;
    var t = conn.transport;
    var now = this._now();
    // Transports that failed in this round while this one works are demoted for a while.
    var failed = this._round.failed;
    for (var i = 0; i < failed.length; i++) {
      if (failed[i] === t) { continue; }
      var prev = this._failures[failed[i]];
      var count = prev ? prev.count + 1 : 1;
      this._failures[failed[i]] = {
        count: count,
        until: now + this.options.reconnect.retryBetter * Math.pow(2, Math.min(count - 1, 4))
      };
    }
    this._round = { failed: [] };
    this._rounds = 0;
    this._authStreak = 0;
    this._everOpen = true;
    this._publishVia = t === 'ws' ? 'ws' : 'http';
    if (this._stableTimer !== null) { this._clearTimeout(this._stableTimer); }
    this._stableTimer = this._setTimeout(function () {
      self._stableTimer = null;
      if (self._conn === conn) { delete self._failures[t]; }
    }, this.options.reconnect.stable);
    this._scheduleUpgrade(t);
    this._setState('open');
    if (topics && topics.length) { this._emit('subscribed', topics.slice()); }
    this._pump();
    this._syncTopics();
  };

  // While on a worse transport, go back to a better one when its demotion ends.
  Client.prototype._scheduleUpgrade = function (current) {
    var self = this;
    if (this._upgradeTimer !== null) { this._clearTimeout(this._upgradeTimer); this._upgradeTimer = null; }
    var avail = this._available();
    var until = null;
    for (var i = 0; i < avail.length && avail[i] !== current; i++) {
      var f = this._failures[avail[i]];
      if (f && (until === null || f.until < until)) { until = f.until; }
    }
    if (until === null) { return; }
    this._upgradeTimer = this._setTimeout(function () {
      self._upgradeTimer = null;
      if (self.state !== 'open' || !self._conn || self._conn.transport !== current) { return; }
      var better = self._pickNext();
      if (better && better !== current) {
        self._round = { failed: [] };
        self._connect(better);
      } else {
        self._scheduleUpgrade(current);
      }
    }, Math.max(0, until - this._now()) + 1);
  };

  Client.prototype._connClosed = function (conn, err) {
    if (conn !== this._conn) { return; }
    this._conn = null;
    conn.stop();
    this._failInflight();
    this._publishVia = null;
    if (this._stableTimer !== null) { this._clearTimeout(this._stableTimer); this._stableTimer = null; }
    if (this._upgradeTimer !== null) { this._clearTimeout(this._upgradeTimer); this._upgradeTimer = null; }
    if (this.state === 'closed') { return; }
    err.transport = conn.transport;
    if (!err.topics && (err.code === 'forbidden' || err.code === 'unauthorized')) { err.topics = conn.topics.slice(); }
    this._error(err);
    if (this._authRefused(conn, err)) { return; }
    if (hasOwn(GATEWAY_REFUSALS, err.code)) {
      // Refused for the gateway's own state, not for the transport: every transport would be
      // refused alike. None is demoted, and the next round starts once the gateway allows it
      // (`Retry-After`), not before the usual backoff, so that a refused client does not press on.
      var allowedIn = err.retryAfter !== undefined ? err.retryAfter * 1000 : 0;
      this._round = { failed: [] };
      this._scheduleRound(Math.max(allowedIn, this._backoff(this._rounds++)));
      return;
    }
    if (err.code === 'bad_cursor') {
      // The gateway refused our positions: say so, and start those topics from now.
      for (var i = 0; i < conn.topics.length; i++) {
        if (hasOwn(this.positions, conn.topics[i])) {
          delete this.positions[conn.topics[i]];
          this._onReset({ topic: conn.topics[i], reason: 'bad_cursor' });
        }
      }
    }
    var t = conn.transport;
    if (!conn.opened) {
      // Failed before it worked: try the next transport at once.
      this._round.failed.push(t);
      var next = this._pickNext();
      if (next) {
        this._setState(this._everOpen ? 'reconnecting' : 'connecting');
        this._connect(next);
        return;
      }
      // Every candidate failed: most likely the network or the gateway, not the transports.
      this._round = { failed: [] };
      this._scheduleRound(this._backoff(this._rounds++));
      return;
    }
    // A connection that dies right after opening without the server saying why (1000 normal,
    // 1001 going away, 1013 slow consumer) counts against its transport.
    var told = err.closeCode === 1000 || err.closeCode === 1001 || err.closeCode === 1013;
    var brief = !told && this._now() - conn.openedAt < this.options.reconnect.stable;
    this._round = { failed: (brief || err.code === 'silence') ? [t] : [] };
    this._scheduleRound(this._backoff(0));
  };

  // Auth refusals are not the transport's fault: no fallback. An expired (or refused) token is
  // replaced by a fresh one and the same transport reconnects at once with its cursor; if that
  // is refused too, or the topics are forbidden, retrying would only be refused again, so the
  // client closes and the application decides (docs/CLIENT.md). A token function that fails is
  // asked again after the usual backoff. Returns whether `err` was one of these.
  Client.prototype._authRefused = function (conn, err) {
    var code = err.code;
    if (code === 'token_error') {
      this._scheduleRoundOn(conn.transport, this._backoff(this._rounds++));
      return true;
    }
    if (code !== 'token_expired' && code !== 'unauthorized' && code !== 'forbidden') { return false; }
    if (code !== 'forbidden' && this._authStreak++ === 0) {
      this._tokenStale = true;
      this._round = { failed: [] };
      this._setState(this._everOpen ? 'reconnecting' : 'connecting');
      this._connect(conn.transport);
      return true;
    }
    this.close();
    return true;
  };

  // A new round on `transport` after `delay`.
  Client.prototype._scheduleRoundOn = function (transport, delay) {
    var self = this;
    this._round = { failed: [] };
    this._setState(this._everOpen ? 'reconnecting' : 'connecting');
    if (this._timer !== null) { this._clearTimeout(this._timer); }
    this._timer = this._setTimeout(function () {
      self._timer = null;
      self._connect(transport);
    }, delay);
  };

  Client.prototype._topicsChanged = function () {
    var self = this;
    if (this._syncTimer !== null || this.state === 'closed') { return; }
    this._syncTimer = this._setTimeout(function () {
      self._syncTimer = null;
      self._syncTopics();
    }, 0);
  };

  Client.prototype._syncTopics = function () {
    var conn = this._conn;
    if (!conn || this.state === 'closed') { return; }
    if (conn.transport === 'ws') {
      if (conn.opened) { conn.syncTopics(); }
      return;
    }
    // SSE and poll carry their topic set in the URL: restart the stream with the joined cursor.
    var same = conn.topics.length === this._topics.length;
    for (var i = 0; same && i < this._topics.length; i++) {
      if (indexOf(conn.topics, this._topics[i]) < 0) { same = false; }
    }
    if (same) { return; }
    this._restartStream();
  };

  // Restarts an SSE stream or a poll loop with the current topics, token and cursor; the client
  // stays open meanwhile.
  Client.prototype._restartStream = function () {
    var conn = this._conn;
    if (conn.opened) {
      conn.stop();
      var fresh = new Conn(this, conn.transport, ++this._connSeq);
      fresh.restart = true;
      this._conn = fresh;
      fresh.start();
    } else {
      this._connect(conn.transport);
    }
  };

  // ------------------------------------------------------------ connection

  function Conn(client, transport, id) {
    this.client = client;
    this.transport = transport;
    this.id = id;
    this.opened = false;
    this.openedAt = 0;
    this.stopped = false;
    this.topics = client._topics.slice();
    this.timers = [];
    this.restart = false;
  }

  Conn.prototype.later = function (fn, ms) {
    var self = this;
    var c = this.client;
    var handle = { id: null };
    handle.id = c._setTimeout(function () {
      var i = indexOf(self.timers, handle);
      if (i >= 0) { self.timers.splice(i, 1); }
      if (!self.stopped) { fn(); }
    }, ms);
    this.timers.push(handle);
    return handle;
  };

  Conn.prototype.cancel = function (handle) {
    if (!handle) { return; }
    var i = indexOf(this.timers, handle);
    if (i >= 0) { this.timers.splice(i, 1); }
    this.client._clearTimeout(handle.id);
  };

  Conn.prototype.fail = function (code, message, extra) {
    if (this.stopped) { return; }
    this.client._connClosed(this, makeError(code, 'Switchboard ' + this.transport + ': ' + message, extra));
  };

  Conn.prototype.open = function (topics) {
    if (this.stopped || this.opened) { return; }
    this.opened = true;
    this.openedAt = this.client._now();
    if (this.connectTimer) { this.cancel(this.connectTimer); this.connectTimer = null; }
    if (this.restart) {
      // A stream restarted for a new topic set or token: the client stays open.
      var c = this.client;
      c._authStreak = 0;
      if (topics && topics.length) { c._emit('subscribed', topics.slice()); }
      c._syncTopics();
      return;
    }
    this.client._connOpened(this, topics);
  };

  Conn.prototype.start = function () {
    var self = this;
    var c = this.client;
    if (c.options.token === null) {
      this.startTransport();
      return;
    }
    // With a token, the transport starts once it is at hand (the function may fetch it, within
    // its own deadline: a slow token function is no fault of the transport).
    c._getToken(false, function (err, token) {
      if (self.stopped) { return; }
      if (err) {
        self.later(function () { self.fail('token_error', err.message, { cause: err.cause }); }, 0);
        return;
      }
      self.token = token;
      self.startTransport();
    });
  };

  Conn.prototype.startTransport = function () {
    var self = this;
    var c = this.client;
    this.connectTimer = this.later(function () {
      self.fail('connect_timeout', 'not established within ' + c.options.timeouts.connect + ' ms');
    }, c.options.timeouts.connect);
    try {
      if (this.transport === 'ws') { this.startWs(); }
      else if (this.transport === 'sse') { this.startSse(); }
      else { this.startPoll(); }
    } catch (e) {
      this.later(function () { self.fail('unavailable', e.message || String(e)); }, 0);
    }
  };

  // A fresh token while open: sent in-band on WebSocket; an SSE stream that carries its token
  // in the URL reconnects with it and its cursor; polls send it with their next request.
  Conn.prototype.tokenChanged = function (token) {
    this.token = token;
    if (!token) { return; }
    if (this.transport === 'ws') {
      this.authRef = 'a' + (++this.client._seq);
      this.sendFrame({ type: 'auth', token: token, ref: this.authRef });
    } else if (this.transport === 'sse' && this.client.options.queryToken && this.es) {
      this.client._restartStream();
    }
  };

  Conn.prototype.stop = function () {
    if (this.stopped) { return; }
    this.stopped = true;
    for (var i = 0; i < this.timers.length; i++) { this.client._clearTimeout(this.timers[i].id); }
    this.timers = [];
    if (this.ws) {
      var ws = this.ws;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(1000); } catch (e) { /* ignore */ }
    }
    if (this.es) {
      try { this.es.close(); } catch (e) { /* ignore */ }
      this.es.onerror = null;
    }
    if (this.xhr) { this.xhr.abort(); }
  };

  Conn.prototype.send = function (text) {
    if (this.ws) { this.ws.send(text); }
  };

  // ---- WebSocket

  Conn.prototype.startWs = function () {
    var self = this;
    var c = this.client;
    var WS = c._lookup('WebSocket');
    // With the token option, the topics are subscribed in-band, after the `auth` frame when
    // there is a token: a token never goes in a URL, and a refusal of the handshake would be
    // invisible to scripts, while an in-band one says why.
    var inBand = c.options.token !== null;
    var url = c.url.replace(/^http/i, 'ws') + '/ws' + (inBand ?
      encodeQuery([], null, c.options.params) :
      encodeQuery(this.topics, c.cursor(this.topics), c.options.params));
    this.pending = {};   // subscribe ref -> topics
    this.lastRx = c._now();
    var ws = this.ws = new WS(url);
    ws.onopen = function () {
      if (self.stopped) { return; }
      self.lastRx = c._now();
      if (inBand && (self.token || self.topics.length)) {
        // Sent back to back: the gateway takes frames in order, so the subscribe is judged
        // with the token's permissions.
        if (self.token) {
          self.authRef = 'a' + (++c._seq);
          self.sendFrame({ type: 'auth', token: self.token, ref: self.authRef });
        }
        if (self.topics.length) {
          self.initialRef = 's' + (++c._seq);
          var frame = { type: 'subscribe', topics: self.topics.slice(), ref: self.initialRef };
          var since = c.cursor(self.topics);
          if (since) { frame.since = since; }
          self.pending[self.initialRef] = self.topics.slice();
          self.sendFrame(frame);
        }
      } else {
        self.sendFrame({ type: 'ping', ref: 'open' });
      }
      self.watchSilence();
    };
    ws.onmessage = function (ev) {
      if (self.stopped) { return; }
      self.lastRx = c._now();
      var f = typeof ev.data === 'string' ? parseJson(ev.data) : undefined;
      if (f && typeof f === 'object') { self.onFrame(f); }
    };
    ws.onerror = noop; // onclose follows with the details
    ws.onclose = function (ev) {
      if (self.stopped) { return; }
      var code = ev && ev.code;
      self.fail(code === 1013 ? 'slow_consumer' : (code === 4001 ? 'token_expired' : 'closed'),
        'closed' + (code ? ' with code ' + code : '') + (ev && ev.reason ? ' (' + ev.reason + ')' : '') +
        (self.opened ? '' : ' before it was established'), { closeCode: code });
    };
  };

  Conn.prototype.sendFrame = function (frame) {
    try { this.ws.send(JSON.stringify(frame)); } catch (e) { /* onclose follows */ }
  };

  // Server pings are invisible to scripts, so we ping when idle and expect an answer.
  Conn.prototype.watchSilence = function () {
    var self = this;
    var c = this.client;
    var silence = c.options.timeouts.silence;
    var step = Math.max(250, Math.floor(silence / 3));
    this.later(function tick() {
      var idle = c._now() - self.lastRx;
      if (idle >= silence) {
        self.fail('silence', 'nothing received for ' + idle + ' ms');
        return;
      }
      if (idle >= step / 2) { self.sendFrame({ type: 'ping', ref: 'idle' }); }
      self.later(tick, step);
    }, step);
  };

  Conn.prototype.onFrame = function (f) {
    var c = this.client;
    var i, topics;
    switch (f.type) {
      case 'message':
        c._deliver(f);
        break;
      case 'subscribed':
        topics = isArray(f.topics) ? f.topics : [];
        if (f.ref === undefined || f.ref === null) {
          c._setPositions(f.positions, topics);
          if (!this.opened) { this.open(topics); }
        } else if (hasOwn(this.pending, f.ref)) {
          var asked = this.pending[f.ref];
          delete this.pending[f.ref];
          c._setPositions(f.positions, asked);
          if (f.ref === this.initialRef && !this.opened) { this.open(asked); }
          else { c._emit('subscribed', asked.slice()); }
        }
        break;
      case 'unsubscribed':
        // Without a ref: a new token does not cover these topics any more.
        if (f.ref === undefined || f.ref === null) {
          topics = isArray(f.topics) ? f.topics : [];
          this.fail('forbidden', 'the new token does not allow ' + topics.join(', '), { topics: topics });
        }
        break;
      case 'pong':
        if (f.ref === 'open' && !this.opened) {
          if (!this.topics.length) { this.open([]); }
        }
        break;
      case 'reset':
        c._onReset(f);
        break;
      case 'ack':
        if (f.ref === this.authRef && this.authRef) {
          if (!this.opened && !this.topics.length) { this.open([]); }
        } else if (typeof f.ref === 'string' && hasOwn(c._inflight, f.ref)) {
          var entry = c._inflight[f.ref];
          delete c._inflight[f.ref];
          c._finish(entry, null, f.id);
        }
        break;
      case 'error':
        var err = makeError(f.code || 'error', String(f.message || f.code || 'error'));
        var retryAfter = seconds(f.retry_after);
        if (retryAfter !== null) { err.retryAfter = retryAfter; }
        var authCode = f.code === 'unauthorized' || f.code === 'forbidden' || f.code === 'token_expired';
        if (typeof f.ref === 'string' && hasOwn(c._inflight, f.ref)) {
          var e = c._inflight[f.ref];
          delete c._inflight[f.ref];
          c._refused(e, err);
        } else if ((f.ref === this.authRef && this.authRef) ||
                   (f.code === 'token_expired' && (f.ref === undefined || f.ref === null))) {
          // The token was refused, or ran out (close code 4001 follows): reconnect or stop,
          // as Client._authRefused decides.
          this.fail(f.code || 'error', err.message);
        } else if (authCode && typeof f.ref === 'string' && hasOwn(this.pending, f.ref)) {
          this.fail(f.code, err.message, { topics: this.pending[f.ref] });
        } else if (typeof f.ref === 'string' && hasOwn(this.pending, f.ref)) {
          topics = this.pending[f.ref];
          delete this.pending[f.ref];
          for (i = 0; i < topics.length; i++) {
            var k = indexOf(this.topics, topics[i]);
            if (k >= 0) { this.topics.splice(k, 1); }
          }
          err.topics = topics;
          err.transport = 'ws';
          c._error(err);
          if (f.code === 'bad_cursor') {
            // Our positions were refused: say so, and subscribe those topics from now.
            for (i = 0; i < topics.length; i++) {
              if (hasOwn(c.positions, topics[i])) {
                delete c.positions[topics[i]];
                c._onReset({ topic: topics[i], reason: 'bad_cursor' });
              }
            }
            var again = this.syncTopics();
            // The connection opens on the answer to the subscribe sent in its place.
            if (f.ref === this.initialRef) { this.initialRef = again; }
          }
        } else {
          err.transport = 'ws';
          c._error(err);
        }
        break;
      default:
        break; // pong, unsubscribed and unknown frames need nothing
    }
  };

  // In-band subscribe/unsubscribe to match the client's topic set; returns the subscribe's ref.
  Conn.prototype.syncTopics = function () {
    var c = this.client;
    var add = [];
    var remove = [];
    var i;
    for (i = 0; i < c._topics.length; i++) {
      if (indexOf(this.topics, c._topics[i]) < 0) { add.push(c._topics[i]); }
    }
    for (i = 0; i < this.topics.length; i++) {
      if (!hasOwn(c._handlers, this.topics[i])) { remove.push(this.topics[i]); }
    }
    if (remove.length) {
      for (i = 0; i < remove.length; i++) { this.topics.splice(indexOf(this.topics, remove[i]), 1); }
      this.sendFrame({ type: 'unsubscribe', topics: remove, ref: 'u' + (++c._seq) });
    }
    if (add.length) {
      var ref = 's' + (++c._seq);
      var frame = { type: 'subscribe', topics: add, ref: ref };
      var since = c.cursor(add);
      if (since) { frame.since = since; }
      this.pending[ref] = add;
      for (i = 0; i < add.length; i++) { this.topics.push(add[i]); }
      this.sendFrame(frame);
      return ref;
    }
    return null;
  };

  // ---- Server-Sent Events

  Conn.prototype.startSse = function () {
    var self = this;
    var c = this.client;
    if (!this.topics.length) {
      // Nothing to stream; publishing goes over HTTP.
      this.later(function () { self.open([]); }, 0);
      return;
    }
    var ES = c._lookup('EventSource');
    // EventSource cannot set headers: its token is the cookie, or (queryToken) the URL's.
    var extra = c.options.queryToken && this.token ? { access_token: this.token } : null;
    var url = c.url + '/events' + encodeQuery(this.topics, c.cursor(this.topics), c.options.params, extra);
    var es = this.es = c.options.withCredentials ? new ES(url, { withCredentials: true }) : new ES(url);
    es.addEventListener('subscribed', function (ev) {
      if (self.stopped) { return; }
      var d = parseJson(ev.data) || {};
      var topics = isArray(d.topics) ? d.topics : self.topics;
      c._setPositions(d.positions, topics);
      self.open(topics);
    }, false);
    es.addEventListener('message', function (ev) {
      if (self.stopped) { return; }
      c._deliver(parseJson(ev.data));
    }, false);
    es.addEventListener('reset', function (ev) {
      if (self.stopped) { return; }
      c._onReset(parseJson(ev.data));
    }, false);
    es.onerror = function (ev) {
      if (self.stopped) { return; }
      if (ev && typeof ev.data === 'string') {
        // The gateway's `event: error` (token_expired) before it ends the stream.
        var d = parseJson(ev.data) || {};
        self.fail(d.code || 'error', String(d.message || d.code || 'error'));
        return;
      }
      if (!self.opened && c.options.token !== null) {
        es.close();
        self.probeSse(url);
        return;
      }
      // EventSource would reconnect by itself; we reconnect with our own cursor instead.
      self.fail('closed', self.opened ? 'the event stream ended' : 'the event stream could not be opened');
    };
  };

  // EventSource does not tell why a stream was refused. The same request through
  // XMLHttpRequest does, so that an auth refusal (401, 403) is not taken for a transport that
  // does not work. A stream that would open (200) is dropped as soon as its headers arrive.
  Conn.prototype.probeSse = function (url) {
    var self = this;
    var c = this.client;
    var XHR = c._lookup('XMLHttpRequest');
    function unopened() { self.fail('closed', 'the event stream could not be opened'); }
    if (!XHR) { unopened(); return; }
    var xhr;
    function drop() {
      xhr.onreadystatechange = null;
      try { xhr.abort(); } catch (e) { /* ignore */ }
    }
    try {
      xhr = new XHR();
      xhr.open('GET', url, true);
      if (c.options.withCredentials) { xhr.withCredentials = true; }
      xhr.onreadystatechange = function () {
        if (self.stopped || xhr.readyState < 2) { return; }
        var status = xhr.status;
        if (status === 200 || (xhr.readyState === 4 && !status)) {
          drop();
          unopened();
        } else if (xhr.readyState === 4) {
          var e = httpError(status, xhr.responseText, retryAfterOf(xhr));
          self.fail(e.code, e.message, { status: status, retryAfter: e.retryAfter });
        }
      };
      xhr.send(null);
      this.xhr = { abort: drop };
    } catch (e) {
      unopened();
    }
  };

  // ---- long-poll

  Conn.prototype.startPoll = function () {
    var self = this;
    var c = this.client;
    if (!this.topics.length) {
      this.later(function () { self.open([]); }, 0);
      return;
    }
    // The first request answers at once, giving the starting positions.
    this.poll(0);
  };

  Conn.prototype.poll = function (timeoutMs) {
    var self = this;
    var c = this.client;
    var secs = Math.round(timeoutMs) / 1000;
    var url = c.url + '/poll' + encodeQuery(this.topics, c.cursor(this.topics), c.options.params, { timeout: secs });
    this.xhr = c._request('GET', url, null, timeoutMs + c.options.timeouts.connect, function (err, status, text, retryAfter) {
      self.xhr = null;
      if (self.stopped) { return; }
      if (err) { self.fail(err.code, err.message); return; }
      var reply = status === 200 ? parseJson(text) : undefined;
      if (status !== 200) {
        var e = httpError(status, text, retryAfter);
        self.fail(e.code, e.message, { status: status, retryAfter: e.retryAfter });
        return;
      }
      if (!reply || typeof reply !== 'object') { self.fail('bad_reply', 'unreadable poll reply'); return; }
      var i;
      var resets = isArray(reply.reset) ? reply.reset : [];
      for (i = 0; i < resets.length && !self.stopped; i++) { c._onReset(resets[i]); }
      var msgs = isArray(reply.messages) ? reply.messages : [];
      for (i = 0; i < msgs.length && !self.stopped; i++) { c._deliver(msgs[i]); }
      if (self.stopped) { return; }
      c._setPositions(reply.positions, self.topics);
      if (!self.opened) { self.open(self.topics); }
      if (self.stopped) { return; }
      self.poll(reply.more ? 0 : c.options.timeouts.poll);
    });
  };

  // ---------------------------------------------------------------- export

  var Switchboard = {
    version: VERSION,
    transports: TRANSPORTS.slice(),
    connect: function (baseUrl, options) { return new Client(baseUrl, options); },
    Client: Client,
    validTopic: validTopic,
    jwtPayload: jwtPayload,
    refreshDelay: refreshDelay
  };
  return Switchboard;
}));
