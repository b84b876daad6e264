import { WebSocketServer, type WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { sleep, type Feed, type Logger } from '@candlewick/common';
import { isRawFrame, isTapeTrade, type TapeItem } from '@candlewick/common';
import { alpacaWire } from './replay/alpaca.js';
import { binanceWire } from './replay/binance.js';
import { finnhubWire } from './replay/finnhub.js';
import { massiveWire } from './replay/massive.js';
import type { Wire } from './replay/wire.js';

export interface ReplayOptions {
  port: number;
  host?: string;
  /** 0: as fast as the socket takes it; otherwise the recorded pace times this factor */
  speed: number;
  /** at most this many trades per frame */
  frameTrades: number;
  /** wait this long after the first subscribe for the rest before starting */
  settleMs?: number;
  /**
   * the keepalive: Finnhub, a {"type":"ping"} once a connection has been idle this long (1 s);
   * Binance, a WebSocket ping frame this often (20 s, as Binance's servers send one); Massive, a
   * WebSocket ping frame this often (5 s); Alpaca, the same
   */
  pingMs?: number;
  /** paced mode only: stamp each trade with the time it is sent, t' = start + (t - t0) / speed */
  shiftToNow?: boolean;
  /**
   * paced mode only: one timeline for every connection, started by the first subscription, as a
   * live feed has: a connection gets the trades due from the moment it subscribes, and what was sent
   * while no connection was up is gone (a real outage, for backfill to fill). Otherwise each
   * connection gets the tape from its start.
   */
  live?: boolean;
  /** whose protocol it speaks (finnhub) */
  feed?: Feed;
  /**
   * Finnhub: when set, a connection must carry ?token=<this>, else HTTP 401 as Finnhub answers;
   * Massive: when set, the auth message must carry it, else auth_failed; Alpaca: the auth message's
   * key must be it, else 402 auth failed
   */
  token?: string;
  /** Alpaca: when set, the auth message's secret must be it, else 402 auth failed */
  secret?: string;
  /** paced: a line saying where it is in the tape, each 1 % of it but at most this often (10 s) */
  progressEveryMs?: number;
  /** called each time a connection has been sent the whole tape */
  onFinished?: () => void;
  /** refuse the n-th handshake (1-based) with this HTTP status, e.g. 429 with Retry-After (tests) */
  refuse?: (n: number) => { status: number; headers?: Record<string, string> } | undefined;
}

/**
 * A trade WebSocket that replays a recorded tape to each connection, in Finnhub's protocol,
 * Binance's, Massive's or Alpaca's (`feed`; replay/finnhub.ts, replay/binance.ts, replay/massive.ts, replay/alpaca.ts): the subscribed symbols' trades in tape
 * order, at the recorded pace times `speed` or as fast as the socket takes them. Each connection
 * gets the tape from the start (unless `live`).
 */
export class ReplayServer {
  private wss: WebSocketServer | undefined;
  private readonly abort = new AbortController();
  private readonly sessions = new Set<Promise<void>>();
  /** connections served so far */
  connections = 0;
  /** live: when the shared timeline started */
  private liveStart: number | undefined;
  private wire: Wire | undefined;

  constructor(
    private readonly tape: readonly TapeItem[],
    private readonly opts: ReplayOptions,
    private readonly log: Logger,
  ) {}

  async start(): Promise<number> {
    const feed = this.opts.feed ?? 'finnhub';
    const wire = (this.wire =
      feed === 'binance'
        ? binanceWire(this.tape, this.opts)
        : feed === 'massive'
          ? massiveWire(this.tape, this.opts)
          : feed === 'alpaca'
            ? alpacaWire(this.tape, this.opts)
            : finnhubWire(this.tape, this.opts));
    let handshakes = 0;
    const wss = new WebSocketServer({
      port: this.opts.port,
      host: this.opts.host ?? '127.0.0.1',
      perMessageDeflate: false,
      verifyClient: (info, done) => {
        handshakes++;
        const refusal = this.opts.refuse?.(handshakes);
        if (refusal) return done(false, refusal.status, 'refused', refusal.headers);
        const refused = wire.refuse(info.req.url ?? '/');
        if (refused) return done(false, refused.status, refused.reason);
        done(true);
      },
    });
    this.wss = wss;
    await new Promise<void>((resolve, reject) => {
      wss.once('listening', resolve);
      wss.once('error', reject);
    });
    wss.on('connection', (ws, req) => {
      const p = this.serve(ws, req.url ?? '/').catch((err: unknown) => this.log.warn({ err }, 'replay session ended with an error'));
      this.sessions.add(p);
      void p.finally(() => this.sessions.delete(p));
    });
    const port = (wss.address() as AddressInfo).port;
    this.log.info({ port, trades: this.tape.length, speed: this.opts.speed, feed: this.opts.feed ?? 'finnhub' }, 'replay server listening');
    return port;
  }

  private tapeSymbols: Set<string> | undefined;
  /** the symbols of the tape's trades */
  private symbols(): Set<string> {
    this.tapeSymbols ??= new Set(this.tape.filter(isTapeTrade).map((tr) => tr.s));
    return this.tapeSymbols;
  }

  get port(): number {
    return (this.wss!.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    for (const c of this.wss?.clients ?? []) c.terminate();
    await new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
    await Promise.all(this.sessions);
  }

  private async serve(ws: WebSocket, url: string): Promise<void> {
    const n = ++this.connections;
    const log = this.log.child({ session: n });
    let subscribed: () => void = () => undefined;
    const first = new Promise<void>((r) => (subscribed = r));
    let open = true;
    let closed: () => void = () => undefined;
    const gone = new Promise<void>((r) => (closed = r));
    let lastSend = Date.now();
    const send = (data: string | Buffer) => {
      ws.send(data, { binary: false });
      lastSend = Date.now();
    };
    const session = this.wire!.session({ ws, url, log, send, lastSend: () => lastSend, subscribed: () => subscribed() });
    const end = () => {
      open = false;
      session.end();
      subscribed();
      closed();
    };
    ws.on('close', end);
    this.abort.signal.addEventListener('abort', end, { once: true });
    try {
      await first;
      // the rest of the subscriptions: until none has come for settleMs (a whole market's 20,000
      // take longer than one settleMs to arrive, and a symbol not yet subscribed gets no trades)
      for (let before = -1; before !== session.subscriptions().length;) {
        before = session.subscriptions().length;
        await sleep(this.opts.settleMs ?? 100, this.abort.signal);
      }
      const subscribedAt = Date.now();
      log.info({ subscriptions: session.subscriptions() }, 'replaying tape');
      // a connection that wants none of the tape's symbols gets nothing: said, with what the tape has
      const tapeSymbols = this.symbols();
      if (tapeSymbols.size > 0 && ![...tapeSymbols].some((sym) => session.wants(sym)))
        log.warn(
          { tapeSymbols: [...tapeSymbols].slice(0, 20), more: Math.max(0, tapeSymbols.size - 20) },
          "none of the symbols subscribed is on the tape: this connection gets no trades (subscribe to the tape's symbols, or replay another REPLAY_TAPE)",
        );
      const drained = async () => {
        // Let the socket drain: this is what "as fast as the socket takes it" means.
        while (open && ws.bufferedAmount > 4 << 20) await sleep(2);
      };

      const whole = this.opts.speed === 0 ? session.whole() : undefined;
      if (whole) {
        for (const frame of whole) {
          if (!open) return;
          send(frame);
          await drained();
        }
        log.info({ frames: whole.length }, 'tape finished; idling with pings');
        this.opts.onFinished?.();
        return await gone;
      }

      const firstTrade = this.tape.find(isTapeTrade);
      const t0 = firstTrade?.t ?? 0;
      const live = this.opts.live === true && this.opts.speed > 0;
      if (live) this.liveStart ??= Date.now();
      const wall0 = live ? this.liveStart! : Date.now();
      const speed = this.opts.speed;
      // a live day: each trade's event time is the moment it is sent
      const shift = speed > 0 && this.opts.shiftToNow === true;
      let batch: number[] = [];
      let times: number[] = [];
      let sent = 0;
      // paced, the tape takes a while: where it is, every 1 % of its span but at most every 10 s
      const lastTrade = this.tape.findLast(isTapeTrade);
      const span = Math.max(1, (lastTrade?.t ?? t0) - t0);
      let saidPct = 0;
      let saidAt = Date.now();
      const flush = async () => {
        if (batch.length === 0) return;
        const frames = session.encode(batch, shift ? times : undefined);
        batch = [];
        times = [];
        for (const frame of frames) send(frame);
        await drained();
      };
      for (let i = 0; i < this.tape.length; i++) {
        const tr = this.tape[i]!;
        if (!open) return;
        if (isRawFrame(tr)) {
          await flush();
          send(tr.raw);
          continue;
        }
        if (!session.wants(tr.s)) continue;
        if (speed > 0 && isTapeTrade(tr)) {
          const due = wall0 + (tr.t - t0) / speed;
          // live: what fell due before this connection subscribed went to an earlier one, or to no one
          if (live && due < subscribedAt) continue;
          const wait = due - Date.now();
          if (wait > 0) {
            await flush();
            await sleep(wait, this.abort.signal);
          }
          const pct = Math.floor(((tr.t - t0) * 100) / span);
          if (pct > saidPct && Date.now() - saidAt >= (this.opts.progressEveryMs ?? 10_000)) {
            saidPct = pct;
            saidAt = Date.now();
            log.info({ sent, tapeTime: new Date(tr.t).toISOString() }, `replayed ${pct}% of the tape`);
          }
          if (shift) times.push(Math.round(due));
        } else if (shift) times.push(0); // a verbatim trade keeps its own text
        batch.push(i);
        sent++;
        if (batch.length >= this.opts.frameTrades) await flush();
      }
      await flush();
      log.info({ sent }, 'tape finished; idling with pings');
      this.opts.onFinished?.();
      await gone;
    } finally {
      session.end();
    }
  }
}
