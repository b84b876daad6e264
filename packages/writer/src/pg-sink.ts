import pg from 'pg';
import {
  decodeBarEntry,
  metrics,
  reportRedisError,
  sleep,
  type Component,
  type Config,
  type Health,
  type Keys,
  type Logger,
  type RedisClient,
  type TappedBar,
} from '@candlewick/common';
import { DatabaseUnavailableError, connectBarsTable, redactDatabaseUrl, upsertBars } from './bars-table.js';

/**
 * `candlewick pg-sink`: the closed bars of every interval (bars:{interval}, which the writer
 * publishes once a row is in its CSV file) into one PostgreSQL table. It reads through a consumer
 * group of its own, so it never slows the CSV path and resumes where it stopped; it acknowledges
 * entries only once the transaction holding their rows has committed. A row is keyed by (symbol,
 * interval, start) and replaced only by a newer revision, so a batch written twice (a sink killed
 * between commit and ack) or corrections arriving out of order change nothing.
 */

/** The group on bars:{interval} (one per Redis: two sinks on one database share it). */
export const PG_SINK_GROUP = 'pg-sink';

export { DatabaseUnavailableError, MIGRATIONS, migrate, redactDatabaseUrl, upsertBars, withPassword } from './bars-table.js';

type Entry = [id: string, fields: string[] | null];

/**
 * How long the sink waits after a pass that found nothing new: at a boundary the writer publishes
 * a job's bars every few tens of ms, and the last job's rows wait at most this long to be read
 * (one read of each bars:{interval} stream each time: well under a ms of Redis a second).
 */
const IDLE_POLL_MS = 50;

/** full batches of one stream read in a row before the next stream's turn (one stream far behind does not hold up the rest) */
const SAME_STREAM_RUN = 8;

export class PgSink implements Component {
  private readonly streams: string[];
  private readonly consumer: string;
  private client: pg.Client | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  /** streams whose own unacknowledged entries (a predecessor's, or a failed batch's) are read first */
  private readonly backlog = new Set<string>();
  private downSince = 0;
  private downSaid = 0;
  private lagEntries = 0;
  private lagSeconds = 0;
  private lagTimer: NodeJS.Timeout | undefined;
  private readonly where: string;
  private readonly m = { lagEntries: metrics.pgLagEntries(), lagSeconds: metrics.pgLagSeconds(), rows: metrics.pgRowsWritten() };

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    keys: Keys,
    private readonly log: Logger,
  ) {
    if (!cfg.databaseUrl) throw new DatabaseUnavailableError('pg-sink needs DATABASE_URL (postgres://user@host:port/database)');
    this.streams = cfg.intervals.map((iv) => keys.bars(iv.name));
    this.consumer = cfg.consumerName ?? PG_SINK_GROUP;
    this.where = redactDatabaseUrl(cfg.databaseUrl);
  }

  /**
   * Connects and migrates. At start (a deadline): tries until DATABASE_CONNECT_TIMEOUT, a refused
   * login not at all, then exit 3. Later: one attempt; the caller says the outage and tries again.
   */
  private async connect(deadline: number | undefined): Promise<pg.Client> {
    const client = await connectBarsTable(this.cfg, this.log, 'candlewick pg-sink', {
      deadline,
      once: deadline === undefined,
      onRetry: (reason) => {
        this.down(reason);
        // asked to stop while waiting for the database at start: no more attempts
        if (this.stopping) throw new DatabaseUnavailableError(`stopped while waiting for the database (${this.where}): ${reason}`);
      },
    });
    this.up();
    return client;
  }

  /** The database lost: said once, once a minute while it lasts, and once when it is back (wording of the Redis link). */
  private down(reason: string): void {
    const now = Date.now();
    if (this.downSince === 0) {
      this.downSince = this.downSaid = now;
      this.log.warn(
        { database: this.where, reason },
        'database unreachable or refusing; the CSV files go on, bars wait in Redis and are written when it is back',
      );
    } else if (now - this.downSaid >= 60_000) {
      this.downSaid = now;
      this.log.warn(
        { database: this.where, reason, downS: Math.round((now - this.downSince) / 1000), behind: this.lagEntries },
        'still no database; retrying',
      );
    }
  }

  private up(): void {
    if (this.downSince === 0) return;
    this.log.info(
      { database: this.where, downS: Math.round((Date.now() - this.downSince) / 1000), behind: this.lagEntries },
      'database is back; catching up',
    );
    this.downSince = 0;
  }

  private starting: Promise<void> | undefined;

  start(): Promise<void> {
    this.starting = this.begin();
    return this.starting;
  }

  private async begin(): Promise<void> {
    this.log.info({ database: this.where }, 'connecting to the database');
    this.client = await this.connect(Date.now() + this.cfg.databaseConnectTimeoutMs);
    for (const s of this.streams) {
      // from 0: a new sink loads everything the streams retain
      await this.redis.xgroup('CREATE', s, PG_SINK_GROUP, '0', 'MKSTREAM').catch((err: Error) => {
        if (!/BUSYGROUP/.test(err.message)) throw err;
      });
      this.backlog.add(s);
    }
    this.log.info({ database: this.where, streams: this.streams.length }, 'pg-sink ready');
    await this.measureLag();
    this.lagTimer = setInterval(() => void this.measureLag(), 5000);
    this.lagTimer.unref();
    this.loop = this.run();
  }

  /** Stops after the entries already closed are written (while the database answers). */
  async stop(): Promise<void> {
    this.stopping = true;
    // asked to stop while starting (a short replay ends before the sink is up): the bars the writer
    // has published are still written before it stops
    await this.starting?.catch(() => undefined);
    if (this.lagTimer) clearInterval(this.lagTimer);
    await this.loop?.catch(() => undefined);
    await this.client?.end().catch(() => undefined);
  }

  health(): Health {
    const lag = { entriesBehind: this.lagEntries, secondsBehind: this.lagSeconds };
    return this.downSince
      ? { ok: false, database: `unreachable for ${Math.round((Date.now() - this.downSince) / 1000)} s; bars wait in Redis`, ...lag }
      : { ok: true, database: 'ok', ...lag };
  }

  /** Entries behind (unread plus read and not committed), and the age of the oldest of them. */
  private async measureLag(): Promise<void> {
    try {
      let entries = 0;
      let oldest = Infinity;
      for (const s of this.streams) {
        const groups = (await this.redis.call('XINFO', 'GROUPS', s)) as unknown[][];
        const g = groups.map(toMap).find((m) => m.get('name') === PG_SINK_GROUP);
        if (!g) continue;
        const pending = Number(g.get('pending') ?? 0);
        const lag = g.get('lag');
        entries += pending + (lag === null || lag === undefined ? 0 : Number(lag));
        if (pending > 0) {
          const p = (await this.redis.call('XPENDING', s, PG_SINK_GROUP)) as [number, string | null, string | null, unknown];
          if (p[1]) oldest = Math.min(oldest, idMs(p[1]));
        }
        const next = (await this.redis.xrange(s, `(${String(g.get('last-delivered-id'))}`, '+', 'COUNT', 1)) as [string, string[]][];
        if (next[0]) oldest = Math.min(oldest, idMs(next[0][0]));
        await this.sayTrimmed(s, g);
      }
      this.lagEntries = entries;
      this.lagSeconds = oldest === Infinity ? 0 : Math.max(0, (Date.now() - oldest) / 1000);
      this.m.lagEntries.set(this.lagEntries);
      this.m.lagSeconds.set(this.lagSeconds);
    } catch (err) {
      reportRedisError(this.log, err, 'measuring the pg-sink lag failed');
    }
  }

  private readonly trimmedSaid = new Map<string, string>();

  /**
   * Entries trimmed (BARS_RETENTION) before this sink read them: the range said, once. Trimming
   * takes the oldest first, so they lie between the group's last delivered entry and the first the
   * stream still holds; they exist when more entries were trimmed than the group had read.
   */
  private async sayTrimmed(stream: string, group: Map<string, unknown>): Promise<void> {
    const lastDelivered = String(group.get('last-delivered-id') ?? '0-0');
    const info = toMap((await this.redis.call('XINFO', 'STREAM', stream)) as unknown[]);
    const first = String(info.get('recorded-first-entry-id') ?? '0-0');
    const trimmed = Number(info.get('entries-added') ?? 0) - Number(info.get('length') ?? 0);
    const read = group.get('entries-read');
    // (entries-read unknown: Redis lost count of the group's place; then any trimmed entry past it counts)
    const unread = read === null || read === undefined ? trimmed > 0 : trimmed > Number(read);
    if (!unread || compareIds(first, lastDelivered) <= 0 || this.trimmedSaid.get(stream) === first) return;
    this.trimmedSaid.set(stream, first);
    this.log.error(
      {
        stream,
        after: lastDelivered,
        before: first,
        from: new Date(idMs(lastDelivered)).toISOString(),
        to: new Date(idMs(first)).toISOString(),
      },
      'closed bars published after "from" and before "to" were trimmed from the stream (BARS_RETENTION) before pg-sink wrote them: those rows are missing from the table; load them from the CSV files',
    );
  }

  /**
   * Reads the streams in turn and writes what it finds, a batch at a time. While a batch is being
   * written, the next one is read: the same stream's when its batch was full (more is waiting there;
   * at most SAME_STREAM_RUN batches in a row, then the next stream's), else the next stream's. So
   * PostgreSQL's work and the sink's own (reading, decoding, acknowledging) overlap. Stops after a
   * turn over every stream that read nothing.
   */
  private async run(): Promise<void> {
    const n = this.streams.length;
    let at = 0;
    /** streams read in a row that had nothing */
    let empty = 0;
    /** batches of the current stream read in a row */
    let run = 0;
    let ahead: { at: number; read: Promise<Entry[] | undefined> } | undefined;
    while (true) {
      const s = this.streams[at]!;
      const entries = await (ahead?.at === at ? ahead.read : this.read(s));
      ahead = undefined;
      if (entries === undefined) {
        // a read that failed (said): the next stream, after a pause
        if (this.stopping) return;
        await sleep(1000);
        at = (at + 1) % n;
        run = 0;
        continue;
      }
      if (entries.length === 0) {
        // its own unacknowledged entries all written: its new ones next
        if (this.backlog.delete(s)) continue;
        at = (at + 1) % n;
        run = 0;
        if (++empty >= n) {
          if (this.stopping) return;
          await sleep(IDLE_POLL_MS);
          empty = 0;
        }
        continue;
      }
      empty = 0;
      // the next batch is read while this one is written
      const same = entries.length >= this.cfg.databaseBatch && ++run < SAME_STREAM_RUN;
      const next = same ? at : (at + 1) % n;
      if (!same) run = 0;
      // (the same stream's own unacknowledged entries are read on from this batch's last: these are not acknowledged yet)
      ahead = { at: next, read: this.read(this.streams[next]!, next === at ? entries.at(-1)![0] : '0') };
      const done = await this.write(s, entries);
      if (done === 'failed') {
        // the database is away: the batch stays pending and is read again first, and so does what
        // was read ahead (delivered to this consumer, not written)
        this.backlog.add(s);
        if ((await ahead.read)?.length) this.backlog.add(this.streams[next]!);
        ahead = undefined;
        if (this.stopping) return;
      } else if (done === 'unacknowledged' && next === at) {
        // written, not acknowledged: read again from the first of this stream's own entries, not on after them
        await ahead.read;
        ahead = undefined;
      }
      at = next;
    }
  }

  /**
   * One batch of a stream: its own unacknowledged entries after `after` while it has some, else new
   * ones; undefined when the read failed (said).
   */
  private async read(s: string, after = '0'): Promise<Entry[] | undefined> {
    try {
      const reply = (await this.redis.call(
        'XREADGROUP',
        'GROUP',
        PG_SINK_GROUP,
        this.consumer,
        'COUNT',
        this.cfg.databaseBatch,
        'STREAMS',
        s,
        this.backlog.has(s) ? after : '>',
      )) as [string, Entry[]][] | null;
      return reply?.[0]?.[1] ?? [];
    } catch (err) {
      if (/NOGROUP/.test((err as Error).message)) {
        await this.redis.xgroup('CREATE', s, PG_SINK_GROUP, '0', 'MKSTREAM').catch(() => undefined);
        return [];
      }
      reportRedisError(this.log, err, 'reading closed bars failed');
      return undefined;
    }
  }

  /**
   * The batch in one statement (one transaction), then the ack: 'failed' when the database did not
   * take it, 'unacknowledged' when it did and the ack failed (the stream's own entries are read again).
   */
  private async write(stream: string, entries: Entry[]): Promise<'written' | 'unacknowledged' | 'failed'> {
    const interval = stream.slice(stream.lastIndexOf(':') + 1);
    const bars: TappedBar[] = [];
    const gone: string[] = [];
    for (const [id, fields] of entries) {
      // a pending entry trimmed by BARS_RETENTION before it was written comes back without fields
      if (fields === null) gone.push(id);
      else bars.push(decodeBarEntry(id, interval, fields));
    }
    if (gone.length)
      this.log.error(
        { stream, entries: gone.length, first: gone[0], last: gone.at(-1) },
        'closed bars read but trimmed (BARS_RETENTION) before they were committed: those rows are missing from the table; load them from the CSV files',
      );
    try {
      this.client ??= await this.connect(undefined);
      // one statement, so one transaction of its own: no BEGIN and COMMIT round trips around it
      if (bars.length) await upsertBars(this.client, bars);
    } catch (err) {
      // a lost connection is opened again; a query PostgreSQL refused is retried the same way
      await this.client?.end().catch(() => undefined);
      this.client = undefined;
      this.down((err as Error).message);
      if (!this.stopping) await sleep(1000);
      return 'failed';
    }
    this.up();
    this.m.rows.inc(bars.length);
    try {
      await this.redis.xack(stream, PG_SINK_GROUP, ...entries.map(([id]) => id));
    } catch (err) {
      // not acknowledged: read again first and written again, which changes nothing (same revision)
      this.backlog.add(stream);
      reportRedisError(this.log, err, 'acknowledging written bars failed');
      // (a refusal that lasts, a user without XACK: tried again each second, not as fast as it fails)
      if (!this.stopping) await sleep(1000);
      return 'unacknowledged';
    }
    return 'written';
  }
}

function toMap(flat: unknown[]): Map<string, unknown> {
  const m = new Map<string, unknown>();
  for (let i = 0; i + 1 < flat.length; i += 2) m.set(String(flat[i]), flat[i + 1]);
  return m;
}

function idMs(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am - bm || as - bs;
}
