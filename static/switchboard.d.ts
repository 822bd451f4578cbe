// Type declarations for switchboard.js, the browser client of the Switchboard gateway.
// See docs/CLIENT.md.

declare namespace Switchboard {
  type TransportName = 'ws' | 'sse' | 'poll';
  type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

  /** A delivered message: the same object on every transport. Unknown fields may appear. */
  interface Message<T = unknown> {
    topic: string;
    /** The message's position in its topic; also a cursor for that topic. */
    id: string;
    data: T;
    /** When the hub accepted it, ms since the Unix epoch. */
    time: number;
    [field: string]: unknown;
  }

  /** Sent before anything else for a topic whose position could not be honoured. */
  interface Reset {
    topic: string;
    /** "retention", "history_lost" or "deleted" from the gateway; "bad_cursor" from the client. */
    reason: 'retention' | 'history_lost' | 'deleted' | 'bad_cursor' | string;
  }

  interface SwitchboardError extends Error {
    name: 'SwitchboardError';
    /**
     * A gateway error code (bad_topic, payload_too_large, unauthorized, forbidden,
     * token_expired, rate_limited, ...) or a client one: closed, queue_full, timeout,
     * connection_lost, network, connect_timeout, silence, unavailable, no_transport,
     * slow_consumer, bad_json, bad_reply, token_error.
     */
    code: string;
    /** HTTP status, for errors that came from an HTTP reply. */
    status?: number;
    /**
     * For `rate_limited`: in how many seconds the gateway allows the next try (`Retry-After`,
     * or `retry_after` of a WebSocket error frame), when it said.
     */
    retryAfter?: number;
    /** The transport a connection error happened on. */
    transport?: TransportName;
    /** WebSocket close code, for `closed` errors on WebSocket. */
    closeCode?: number;
    /** The topic of a failed publish that had no callback. */
    topic?: string;
    /** The topics of a rejected subscription (in-band subscribe, or `forbidden`/`unauthorized`). */
    topics?: string[];
    /** For `token_error`: what the token function failed with. */
    cause?: unknown;
  }

  /**
   * Gives the client a token: call `callback(null, token)` with a JWT, `callback(null, null)`
   * when the cookie carries the credentials (or no one is logged in), or `callback(err)` when
   * none can be had now (the client reports `token_error` and asks again after its backoff).
   * Instead of calling back, the function may return a promise of the token. Called before
   * connecting, again before the token's `exp`, and after the gateway says `token_expired`.
   */
  type TokenFunction = (callback: (err: unknown, token?: string | null) => void) => void | PromiseLike<string | null>;

  type Handler<T = unknown> = (data: T, message: Message<T>) => void;
  type PublishCallback = (err: SwitchboardError | null, id?: string) => void;

  interface Timeouts {
    /** ms to establish a transport (default 10000). */
    connect?: number;
    /** ms without any frame on an open WebSocket before it is declared dead (default 45000). */
    silence?: number;
    /** ms from publish() to its acknowledgement (default 30000). */
    publish?: number;
    /** ms a long-poll request is held by the gateway (default 25000). */
    poll?: number;
  }

  interface Reconnect {
    /** First reconnect delay in ms (default 500). */
    min?: number;
    /** Largest reconnect delay in ms (default 15000). */
    max?: number;
    /** Growth of the delay per failed round (default 2). */
    factor?: number;
    /** Fraction of the delay removed at random, 0..1 (default 0.5). */
    jitter?: number;
    /** ms before a transport that failed is tried again; doubles per failure, up to 16x (default 60000). */
    retryBetter?: number;
    /** A connection that dies sooner than this (ms) counts as a transport failure (default 5000). */
    stable?: number;
  }

  interface Options {
    /** Transports in order of preference (default ["ws", "sse", "poll"]). */
    transports?: TransportName[] | TransportName;
    /** Extra query parameters sent with every request (arrays repeat the parameter). */
    params?: { [name: string]: string | number | boolean | Array<string | number | boolean> };
    /** Positions to resume from, per topic (e.g. saved from `client.positions`). */
    positions?: { [topic: string]: string };
    /** Send cookies on cross-origin SSE and HTTP requests (default false). */
    withCredentials?: boolean;
    /**
     * Credentials for a gateway with access control: a JWT, or a function that gives a fresh
     * one (default none). Sent in-band on WebSocket, as `Authorization: Bearer` on polls and
     * HTTP publishes, and in the EventSource URL only with `queryToken`.
     */
    token?: string | TokenFunction | null;
    /**
     * Put the token in EventSource URLs as `access_token` (the gateway must allow it), for
     * pages on another site than the gateway, where its cookie does not reach (default false).
     */
    queryToken?: boolean;
    /** Publishes that may wait for a connection (default 100); more fail with `queue_full`. */
    publishQueue?: number;
    timeouts?: Timeouts;
    reconnect?: Reconnect;
    // Testing hooks: replacements for the browser's globals (null = not available).
    WebSocket?: unknown;
    EventSource?: unknown;
    XMLHttpRequest?: unknown;
    timers?: {
      setTimeout(fn: () => void, ms: number): unknown;
      clearTimeout(handle: unknown): void;
      now(): number;
    };
    random?: () => number;
    location?: { protocol: string; host: string } | null;
  }

  interface Client {
    /** The absolute http(s) base URL in use. */
    readonly url: string;
    /** The transport of the current connection or attempt; null before the first attempt. */
    readonly transport: TransportName | null;
    readonly state: State;
    /** Last known position per subscribed topic. Read-only for applications. */
    readonly positions: { readonly [topic: string]: string };
    readonly options: Options;

    subscribe<T = unknown>(topic: string, handler?: Handler<T>): this;
    unsubscribe(topic: string, handler?: Handler<any>): this;
    publish(topic: string, data: unknown, callback?: PublishCallback): this;
    /** The cursor for the given (default: all subscribed) topics: their positions joined with ".". */
    cursor(topics?: string[]): string;
    /** The subscribed topics. */
    topics(): string[];
    close(): this;

    on(event: 'transport', fn: (transport: TransportName, previous: TransportName | null) => void): this;
    on(event: 'state', fn: (state: State, previous: State) => void): this;
    on(event: 'reset', fn: (reset: Reset) => void): this;
    on(event: 'error', fn: (err: SwitchboardError) => void): this;
    on(event: 'subscribed', fn: (topics: string[]) => void): this;
    on(event: 'message', fn: (message: Message) => void): this;
    off(event: string, fn?: (...args: any[]) => void): this;
  }

  interface Static {
    readonly version: string;
    readonly transports: TransportName[];
    connect(baseUrl?: string | null, options?: Options): Client;
    /** The client constructor; `connect` is the same as `new Client(...)`. */
    Client: new (baseUrl?: string | null, options?: Options) => Client;
    validTopic(topic: unknown): boolean;
    /** The payload of a JWT, decoded but not verified; null if `token` is not a JWT. */
    jwtPayload(token: unknown): { [claim: string]: unknown } | null;
    /**
     * ms after `nowMs` at which the client replaces a token with this payload: 90 % of its
     * lifetime or 30 s before `exp`, whichever is earlier (not before half of it, nor within
     * 1 s); null for a token without `exp` or one already over.
     */
    refreshDelay(payload: { exp?: unknown; iat?: unknown } | null, nowMs: number): number | null;
  }
}

declare const Switchboard: Switchboard.Static;
export = Switchboard;
export as namespace Switchboard;
