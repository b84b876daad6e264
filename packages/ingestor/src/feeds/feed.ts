import WebSocket from 'ws';
import { redactUrl, redisLink, sleep, type Logger } from '@candlewick/common';
import { FutureGuard, validateTrade, type Trade } from '@candlewick/core';
import type { TradeSink } from '../sink.js';
import type { FeedProtocol } from './protocol.js';

export interface FeedOptions {
  symbols: readonly string[];
  /** FUTURE_LIMIT_MS (default 15 min) and CLOCK (default event): trades from the future (core/future.ts) */
  futureLimitMs?: number;
  clock?: 'wall' | 'event';
  /** no frame (pings included) for this long: the socket is considered dead */
  staleMs?: number;
  /** called when a connection is open and subscribed */
  onUp?: () => void;
  /** called with {start, end} after the feed came back from an outage */
  onGap?: (gap: { start: number; end: number; symbols: readonly string[] }) => void;
  /** called once when a feed that was up goes down (the start of an outage) */
  onDown?: () => void;
}

/**
 * The feed refused us in a way retrying cannot fix: the handshake with HTTP 401/403 (a bad or
 * unentitled key), or a message after it (a login refused; `status` undefined).
 */
export class FeedAuthError extends Error {
  constructor(
    readonly status: number | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'FeedAuthError';
  }
}

/**
 * The feed limits us for a while: the handshake answered with HTTP 429 or 418 (too many connections
 * or requests), or a message saying so (too many connections on this key).
 */
class RateLimitedError extends Error {
  constructor(
    readonly retryAfterMs: number,
    message: string,
  ) {
    super(`${message}; retrying in ${Math.round(retryAfterMs / 1000)} s`);
  }

  static http(retryAfterMs: number, status: number): RateLimitedError {
    return new RateLimitedError(
      retryAfterMs,
      `the feed is rate limiting this ${status === 418 ? 'address (HTTP 418: banned for a while after too many reconnects)' : 'key (HTTP 429)'}`,
    );
  }
}

/**
 * A trade WebSocket client, whatever the feed (its protocol: feeds/finnhub.ts, feeds/binance.ts,
 * feeds/massive.ts): numbered connections, subscribe on open or once a login sent on open is
 * accepted (paced to the feed's message limit), a refusal or a limit said in a message acted on as
 * one said in the handshake, exponential
 * backoff with jitter (capped at 30 s, reset only after a good message), a stale-socket watchdog
 * fed by frames and the feed's ping frames, and every trade validated alone so one bad trade never
 * costs the rest of its message.
 */
export class TradeFeed {
  private ws: WebSocket | undefined;
  private conn = 0;
  private attempt = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private failWith: (err: Error) => void = () => undefined;
  /** settles when the feed gave up for good (a refused token) */
  readonly fatal = new Promise<Error>((resolve) => (this.failWith = resolve));
  private badLogged = 0;
  private downSince: number | undefined;
  private wasUp = false;

  /** the socket is open and subscribed */
  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }
  frames = 0;
  trades = 0;
  rejected = 0;
  badFrames = 0;

  /** trades for symbols not subscribed (dropped) */
  foreign = 0;
  private readonly subscribed: ReadonlySet<string>;
  /** trades ahead of the clock or the feed: held back for confirmation, or rejected */
  readonly future: FutureGuard<Trade>;

  constructor(
    private readonly protocol: FeedProtocol,
    private readonly opts: FeedOptions,
    private readonly sink: TradeSink,
    private readonly log: Logger,
  ) {
    this.subscribed = new Set(opts.symbols);
    // "ahead of the clock" is ahead of Redis's (the watermark's): a step of this host's clock
    // (NTP, `date -s`) must not reject every trade as one from the future
    this.future = new FutureGuard(opts.futureLimitMs ?? 900_000, (opts.clock ?? 'event') === 'event', () => redisLink.redisNowMs());
  }

  private readonly accept = (tr: Trade): void => {
    this.trades++;
    this.sink.push(tr);
  };

  private readonly refuse = (tr: Trade, reason: string): void => {
    this.rejected++;
    this.sink.reject({ s: tr.s, p: tr.p, v: tr.v, t: tr.t, c: tr.c }, reason, tr.rx, 'future');
    this.warnBad(this.log, 'trade rejected', { reason });
  };

  private readonly same = (tr: Trade): Trade => tr;

  /** The input ended (the ingestor stops): a trade still held back is rejected. */
  endInput(): void {
    this.future.end(this.refuse);
  }

  async start(): Promise<void> {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.ws?.close();
    await this.loop;
    await this.sink.close();
  }

  /**
   * Pause/resume reading from the socket (backpressure from Redis). A paused socket delivers no
   * frames, so the stale-feed watchdog is suspended while it is paused and starts afresh on
   * resume: our own backpressure (Redis away for minutes) must never look like a dead feed, or a
   * healthy connection would be cut and what it had buffered lost.
   */
  pressure(paused: boolean): void {
    if (this.paused === paused) return;
    this.paused = paused;
    if (paused) {
      this.pausedAt = Date.now();
      this.disarm();
      this.ws?.pause();
    } else {
      const pausedMs = Date.now() - this.pausedAt;
      if (pausedMs >= 1000) this.log.info({ pausedMs }, 'reading the feed again: Redis took what was waiting');
      this.ws?.resume();
      this.arm();
    }
  }

  private paused = false;
  private pausedAt = 0;
  /** receive time of the last frame of a connection that was up: where an outage starts */
  private lastFrameAt = 0;
  private watchdog: NodeJS.Timeout | undefined;
  private arm: () => void = () => undefined;

  private disarm(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const n = ++this.conn;
      const log = this.log.child({ conn: n });
      const started = Date.now();
      let floorMs = 0;
      let lastError: string | undefined;
      try {
        await this.connectOnce(log);
      } catch (err) {
        if (err instanceof FeedAuthError) {
          log.error({ status: err.status }, err.message);
          this.failWith(err);
          return;
        }
        if (err instanceof RateLimitedError) {
          floorMs = err.retryAfterMs;
          log.warn(err.message);
        } else lastError = err instanceof Error ? err.message : String(err);
      }
      if (this.stopped) break;
      // An outage starts when a feed that was up goes down (at its last frame: a socket found
      // silent was already down before the watchdog noticed); failing to connect at start-up is not a gap.
      if (this.wasUp && this.downSince === undefined) {
        this.downSince = this.lastFrameAt || Date.now();
        this.opts.onDown?.();
      }
      const backoff = Math.min(30_000, 250 * 2 ** Math.min(this.attempt, 7)) * (0.5 + Math.random() / 2);
      const delay = Math.max(floorMs, backoff);
      this.attempt++;
      if (this.openedConn === n) {
        this.unreachableSince = 0;
        log.info({ delayMs: Math.round(delay), upMs: Date.now() - started }, 'feed disconnected; reconnecting');
      } else if (lastError !== undefined) this.unreachable(log, lastError, delay);
      await sleep(delay, this.abort.signal);
    }
  }

  /** the last connection that opened */
  private openedConn = 0;
  /** since when no connection has opened (0: the last one did) */
  private unreachableSince = 0;
  private unreachableSaid = 0;

  /**
   * A connection that never opened: said each time, and once it has gone on for STALE_MS (then
   * again each minute) with what to check — the network, or the feed's URL setting.
   */
  private unreachable(log: Logger, err: string, delayMs: number): void {
    const now = Date.now();
    this.unreachableSince ||= now;
    const url = redactUrl(this.protocol.url());
    log.warn({ err, url, retryInMs: Math.round(delayMs) }, 'feed connection failed; retrying');
    const forMs = now - this.unreachableSince;
    if (forMs >= (this.opts.staleMs ?? 30_000) && now - this.unreachableSaid >= 60_000) {
      this.unreachableSaid = now;
      log.error(
        { err, url, forS: Math.round(forMs / 1000) },
        `cannot reach ${this.protocol.name} at ${url} for ${Math.round(forMs / 1000)} s (${err}): check this host's network ` +
          `(DNS, a firewall or proxy) and ${this.protocol.urlSetting}; still retrying`,
      );
    }
  }

  private connectOnce(log: Logger): Promise<void> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.protocol.url(), { perMessageDeflate: false });
      this.ws = ws;
      const staleMs = this.opts.staleMs ?? 30_000;
      this.arm = () => {
        this.disarm();
        if (this.paused) return;
        this.watchdog = setTimeout(() => {
          log.warn({ staleMs }, 'no frame from the feed; terminating the socket');
          ws.terminate();
        }, staleMs);
      };
      ws.on('open', () => {
        this.openedConn = this.conn;
        log.info(
          { feed: this.protocol.name, url: redactUrl(this.protocol.url()), symbols: this.opts.symbols.length },
          'feed connected; subscribing',
        );
        this.sink.newConnection();
        // a feed that logs in by message gets the subscriptions once it has accepted the login
        if (this.protocol.login) ws.send(this.protocol.login());
        else void this.subscribe(ws, log);
        // a connection opened while Redis holds us back reads nothing until it is back
        if (this.paused) ws.pause();
        this.arm();
        this.opts.onUp?.();
      });
      ws.on('message', (data) => {
        this.arm();
        this.onFrame(data.toString(), log);
      });
      // a feed that keeps a quiet connection alive with ping frames (Binance) is alive
      ws.on('ping', () => this.arm());
      ws.on('unexpected-response', (_req, res) => {
        const status = res.statusCode ?? 0;
        const auth = this.protocol.authError(status);
        if (auth) reject(new FeedAuthError(status, auth));
        else if (status === 429 || status === 418) {
          const after = Number(res.headers['retry-after']);
          reject(RateLimitedError.http(Number.isFinite(after) && after > 0 ? after * 1000 : 60_000, status));
        } else reject(new Error(`feed refused the connection: HTTP ${status}`));
        ws.terminate();
      });
      ws.on('error', (err) => reject(err));
      ws.on('close', () => {
        this.disarm();
        this.arm = () => undefined;
        this.ws = undefined;
        // the feed said in a message why it is over (a refused login, a connection limit)
        const ending = this.ending;
        this.ending = undefined;
        if (ending) reject(ending);
        else resolve();
      });
    });
  }

  /**
   * The feed's subscription messages, at most `protocol.messagesPerSecond` a second (a feed that
   * counts them closes a connection that sends faster); stops when the connection does.
   */
  private async subscribe(ws: WebSocket, log: Logger): Promise<void> {
    const messages = this.protocol.subscribe(this.opts.symbols);
    const gapMs = 1000 / this.protocol.messagesPerSecond;
    for (let k = 0; k < messages.length; k++) {
      if (ws.readyState !== WebSocket.OPEN) return;
      // (a feed that does not count them gets them all at once, as one loop: 20,000 symbols in a moment)
      if (k > 0 && gapMs > 0 && Number.isFinite(gapMs)) await sleep(gapMs, this.abort.signal);
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(messages[k]!);
    }
    if (messages.length > 1) log.debug({ messages: messages.length }, 'subscriptions sent');
  }

  /** why the open connection is being closed, said by the feed in a message: connectOnce rejects with it */
  private ending: Error | undefined;

  /** The feed said in a message that this connection is over: it is closed, and run() reads why. */
  private endWith(err: Error): void {
    this.ending = err;
    if (this.ws) this.ws.terminate();
    else if (err instanceof FeedAuthError) {
      // no connection (a frame handed to onFrame directly): the feed gives up all the same
      this.stopped = true;
      this.failWith(err);
    }
  }

  private good(): void {
    this.lastFrameAt = Date.now();
    this.attempt = 0;
    this.wasUp = true;
    if (this.downSince !== undefined) {
      const gap = { start: this.downSince, end: Date.now(), symbols: this.opts.symbols };
      this.downSince = undefined;
      this.opts.onGap?.(gap);
    }
  }

  private warnBad(log: Logger, msg: string, extra: Record<string, unknown>): void {
    this.badLogged++;
    if (this.badLogged <= 20 || this.badLogged % 1000 === 0) log.warn({ ...extra, seen: this.badLogged }, msg);
  }

  /** One WebSocket frame. Exposed for tests of the validation path. */
  onFrame(text: string, log: Logger = this.log): void {
    this.frames++;
    const rx = Date.now();
    const frame = this.protocol.readFrame(text);
    switch (frame.kind) {
      case 'ack':
        this.good();
        return;
      case 'authorized':
        this.good();
        if (this.ws) void this.subscribe(this.ws, log);
        return;
      case 'fatal':
        this.endWith(new FeedAuthError(undefined, frame.msg));
        return;
      case 'limited':
        this.endWith(new RateLimitedError(frame.retryAfterMs, frame.msg));
        return;
      case 'not-json':
        this.badFrames++;
        this.sink.badFrame();
        this.warnBad(log, 'frame is not JSON; ignored', { frame: text.slice(0, 120) });
        return;
      case 'ping':
        this.good();
        return;
      case 'no-data':
        this.good();
        this.badFrames++;
        this.sink.badFrame();
        this.warnBad(log, 'trade message without a data array; ignored', {});
        return;
      case 'error':
        // e.g. "Subscribing to too many symbols" or an unknown symbol: the connection stays up
        log.error(
          { feed: this.protocol.name, feedMessage: frame.msg.slice(0, 200) },
          `the feed reported an error${frame.hint ? `: ${frame.hint}` : ''}`,
        );
        return;
      case 'unknown':
        this.badFrames++;
        this.sink.badFrame();
        this.warnBad(log, 'frame of unknown type; ignored', { type: String(frame.type).slice(0, 40) });
        return;
      case 'amends':
        // corrections and cancels of trades sent before: kept and counted (the closer applies them); the message's trades follow
        void this.sink.amends(frame.amends, rx);
        break;
    }
    this.good();
    for (const raw of frame.data) {
      const v = validateTrade(raw, rx);
      if (v.ok) {
        if (!this.subscribed.has(v.trade.s)) {
          // only subscribed symbols make bars: a feed that sends others would fill DATA_DIR with them
          if (this.foreign++ === 0)
            log.warn(
              { symbol: v.trade.s },
              'the feed sent trades for a symbol not in SYMBOLS: such trades are dropped and counted (said once)',
            );
          this.sink.foreignTrade();
          continue;
        }
        this.future.offer(v.trade, this.same, this.accept, this.refuse);
      } else {
        this.rejected++;
        this.sink.reject(raw, v.reason, rx);
        this.warnBad(log, 'trade rejected', { reason: v.reason });
      }
    }
  }
}
