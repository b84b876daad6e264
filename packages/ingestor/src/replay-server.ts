import { WebSocketServer, type WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { sleep, type Logger } from '@candlewick/common';
import { isRawFrame, isRawTrade, isTapeTrade, type TapeItem, type TapeTrade } from '@candlewick/common';
import { JSON_NUMBER } from '@candlewick/core';

export interface ReplayOptions {
  port: number;
  host?: string;
  /** 0: as fast as the socket takes it; otherwise the recorded pace times this factor */
  speed: number;
  /** at most this many trades per frame */
  frameTrades: number;
  /** wait this long after the first subscribe for the rest before starting */
  settleMs?: number;
  /** ping interval once the tape is done (Finnhub pings idle connections) */
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
  /** when set, a connection must carry ?token=<this>, else HTTP 401 as Finnhub answers */
  token?: string;
  /** paced: a line saying where it is in the tape, each 1 % of it but at most this often (10 s) */
  progressEveryMs?: number;
  /** called each time a connection has been sent the whole tape */
  onFinished?: () => void;
  /** refuse the n-th handshake (1-based) with this HTTP status, e.g. 429 with Retry-After (tests) */
  refuse?: (n: number) => { status: number; headers?: Record<string, string> } | undefined;
}

/**
 * A Finnhub-protocol trade WebSocket that replays a recorded tape to each connection: it accepts
 * {"type":"subscribe","symbol":...}, sends {"type":"trade","data":[{s,p,v,t,c}...]} frames in tape
 * order for the subscribed symbols, and {"type":"ping"} when idle. Each connection gets the tape
 * from the start.
 */
export class ReplayServer {
  private wss: WebSocketServer | undefined;
  private readonly abort = new AbortController();
  private readonly sessions = new Set<Promise<void>>();
  /** connections served so far */
  connections = 0;
  /** live: when the shared timeline started */
  private liveStart: number | undefined;

  constructor(
    private readonly tape: readonly TapeItem[],
    private readonly opts: ReplayOptions,
    private readonly log: Logger,
  ) {}

  async start(): Promise<number> {
    this.encode();
    let handshakes = 0;
    const wss = new WebSocketServer({
      port: this.opts.port,
      host: this.opts.host ?? '127.0.0.1',
      perMessageDeflate: false,
      verifyClient: (info, done) => {
        handshakes++;
        const refusal = this.opts.refuse?.(handshakes);
        if (refusal) return done(false, refusal.status, 'refused', refusal.headers);
        if (this.opts.token !== undefined) {
          const token = new URL(info.req.url ?? '/', 'ws://x').searchParams.get('token');
          if (token !== this.opts.token) return done(false, 401, 'Unauthorized');
        }
        done(true);
      },
    });
    this.wss = wss;
    await new Promise<void>((resolve, reject) => {
      wss.once('listening', resolve);
      wss.once('error', reject);
    });
    wss.on('connection', (ws) => {
      const p = this.serve(ws).catch((err: unknown) => this.log.warn({ err }, 'replay session ended with an error'));
      this.sessions.add(p);
      void p.finally(() => this.sessions.delete(p));
    });
    const port = (wss.address() as AddressInfo).port;
    this.log.info({ port, trades: this.tape.length, speed: this.opts.speed }, 'replay server listening');
    return port;
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

  /** Each trade's JSON, encoded once when the server starts and reused by every session. */
  private encoded: (string | undefined)[] = [];

  /** Whole frames for the common case of a session that subscribes to every symbol of the tape. */
  private fullFrames: Buffer[] = [];
  private readonly tapeSymbols = new Set<string>();

  private encode(): void {
    this.encoded = this.tape.map((tr) => (isRawFrame(tr) ? undefined : isRawTrade(tr) ? tr.rawTrade : encodeTrade(tr, tr.t)));
    if (this.opts.speed !== 0) return;
    let frame: string[] = [];
    const cut = () => {
      if (frame.length) this.fullFrames.push(Buffer.from(`{"type":"trade","data":[${frame.join(',')}]}`));
      frame = [];
    };
    this.tape.forEach((tr, i) => {
      if (isRawFrame(tr)) {
        cut();
        this.fullFrames.push(Buffer.from(tr.raw));
        return;
      }
      if (tr.s !== undefined) this.tapeSymbols.add(tr.s);
      frame.push(this.encoded[i]!);
      if (frame.length >= this.opts.frameTrades) cut();
    });
    cut();
  }

  private async serve(ws: WebSocket): Promise<void> {
    const n = ++this.connections;
    const log = this.log.child({ session: n });
    const symbols = new Set<string>();
    let subscribed: () => void = () => undefined;
    const first = new Promise<void>((r) => (subscribed = r));
    let open = true;
    let closed: () => void = () => undefined;
    const gone = new Promise<void>((r) => (closed = r));
    // Finnhub pings a connection that has had nothing to send for a while; so does the replay
    // (also inside quiet stretches of a paced tape), so a client's stale-feed watchdog sees a live socket.
    let lastSend = Date.now();
    const send = (data: string | Buffer) => {
      ws.send(data, { binary: false });
      lastSend = Date.now();
    };
    const pingMs = this.opts.pingMs ?? 1000;
    const keepalive = setInterval(
      () => {
        if (open && Date.now() - lastSend >= pingMs) send('{"type":"ping"}');
      },
      Math.max(20, pingMs / 2),
    );
    const end = () => {
      open = false;
      clearInterval(keepalive);
      subscribed();
      closed();
    };
    ws.on('close', end);
    this.abort.signal.addEventListener('abort', end, { once: true });
    ws.on('message', (data) => {
      try {
        const msg = JSON.parse(data.toString()) as { type?: string; symbol?: string };
        if (msg.type === 'subscribe' && typeof msg.symbol === 'string') {
          symbols.add(msg.symbol);
          subscribed();
        } else if (msg.type === 'unsubscribe' && typeof msg.symbol === 'string') symbols.delete(msg.symbol);
      } catch {
        send(JSON.stringify({ type: 'error', msg: 'invalid JSON' }));
      }
    });
    try {
      await first;
      // the rest of the subscriptions: until none has come for settleMs (a whole market's 20,000
      // take longer than one settleMs to arrive, and a symbol not yet subscribed gets no trades)
      for (let before = -1; before !== symbols.size;) {
        before = symbols.size;
        await sleep(this.opts.settleMs ?? 100, this.abort.signal);
      }
      const subscribedAt = Date.now();
      log.info({ symbols: [...symbols] }, 'replaying tape');
      const drained = async () => {
        // Let the socket drain: this is what "as fast as the socket takes it" means.
        while (open && ws.bufferedAmount > 4 << 20) await sleep(2);
      };

      if (this.opts.speed === 0 && [...this.tapeSymbols].every((sym) => symbols.has(sym))) {
        for (const frame of this.fullFrames) {
          if (!open) return;
          send(frame);
          await drained();
        }
        log.info({ frames: this.fullFrames.length }, 'tape finished; idling with pings');
        this.opts.onFinished?.();
        return await gone;
      }

      const firstTrade = this.tape.find(isTapeTrade);
      const t0 = firstTrade?.t ?? 0;
      const live = this.opts.live === true && this.opts.speed > 0;
      if (live) this.liveStart ??= Date.now();
      const wall0 = live ? this.liveStart! : Date.now();
      const speed = this.opts.speed;
      let frame: string[] = [];
      let sent = 0;
      // paced, the tape takes a while: where it is, every 1 % of its span but at most every 10 s
      const lastTrade = this.tape.findLast(isTapeTrade);
      const span = Math.max(1, (lastTrade?.t ?? t0) - t0);
      let saidPct = 0;
      let saidAt = Date.now();
      const flush = async () => {
        if (frame.length === 0) return;
        const text = `{"type":"trade","data":[${frame.join(',')}]}`;
        frame = [];
        send(text);
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
        if (tr.s !== undefined && !symbols.has(tr.s)) continue;
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
        }
        // a live day: each trade's event time is the moment it is sent
        if (speed > 0 && this.opts.shiftToNow && isTapeTrade(tr)) frame.push(encodeTrade(tr, Math.round(wall0 + (tr.t - t0) / speed)));
        else frame.push(this.encoded[i]!);
        sent++;
        if (frame.length >= this.opts.frameTrades) await flush();
      }
      await flush();
      log.info({ sent }, 'tape finished; idling with pings');
      this.opts.onFinished?.();
      await gone;
    } finally {
      clearInterval(keepalive);
    }
  }
}

/** A JSON number as written, or else its text as a JSON string: a replayed frame is always valid JSON. */
const jsonValue = (x: string | number): string => {
  const text = String(x);
  return JSON_NUMBER.test(text) ? text : JSON.stringify(text);
};

/** One trade as Finnhub sends it: {"s","p","v","t","c"}, with event time `t`. */
function encodeTrade(tr: TapeTrade, t: number): string {
  return `{"s":${JSON.stringify(tr.s)},"p":${jsonValue(tr.p)},"v":${jsonValue(tr.v)},"t":${jsonValue(t)},"c":${JSON.stringify(tr.c)}}`;
}
