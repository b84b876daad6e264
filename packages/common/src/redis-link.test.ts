import { describe, expect, it, vi } from 'vitest';
import type { Logger } from './logger.js';
import { RECONNECT_WITHIN_MS, RedisLink, monoMs } from './redis.js';
import { Quiet } from './stats.js';

/** A RedisLink on a clock the test moves, its lines kept as [level, msg]. */
function link() {
  let t = 1_000_000;
  const said: [string, string][] = [];
  const log = Object.fromEntries(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map((level) => [
      level,
      (...args: unknown[]) => said.push([level, String(args.find((a) => typeof a === 'string'))]),
    ]),
  ) as unknown as Logger;
  const l = new RedisLink(() => t);
  l.useLogger(log);
  return {
    l,
    said,
    loud: () => said.filter(([level]) => level !== 'debug'),
    wait: (ms: number) => (t += ms),
  };
}

describe('RedisLink: an outage said once, however it ends', () => {
  it('one WARN when Redis is lost, one INFO when it is back, reminders once a minute', () => {
    const { l, loud, wait } = link();
    l.error(new Error('connect ECONNREFUSED'), 'redis');
    wait(30_000);
    l.error(new Error('connect ECONNREFUSED'), 'redis');
    wait(31_000);
    l.error(new Error('connect ECONNREFUSED'), 'redis');
    l.ready();
    expect(loud().map(([, m]) => m)).toEqual([
      'lost the connection to Redis; retrying (every role waits, nothing is dropped)',
      'still no Redis; retrying',
      'Redis is back',
    ]);
  });

  it('a connection lost just after a silent Redis answered (a failover of a paused master) is the same outage', () => {
    const { l, loud, wait } = link();
    l.notAnswering(4000, 'cluster node 127.0.0.1:7001');
    wait(1000);
    l.answered();
    wait(200);
    l.error(new Error('Connection is closed.'), 'cluster node 127.0.0.1:7001');
    wait(300);
    l.ready();
    expect(loud()).toEqual([
      ['warn', 'Redis is not answering for 4 s (paused, swapping or stuck?); every role waits, nothing is dropped'],
      ['info', 'Redis is back'],
    ]);
  });

  it('such a tail that lasts is said after all, and an outage later on is a new one', () => {
    const { l, loud, wait } = link();
    l.error(new Error('read ECONNRESET'), 'redis');
    l.ready();
    wait(1000);
    l.error(new Error('connect ECONNREFUSED'), 'redis');
    wait(6000);
    l.error(new Error('connect ECONNREFUSED'), 'redis');
    l.ready();
    wait(60_000);
    l.error(new Error('read ECONNRESET'), 'redis');
    l.ready();
    const lost = 'lost the connection to Redis; retrying (every role waits, nothing is dropped)';
    expect(loud().map(([, m]) => m)).toEqual([lost, 'Redis is back', lost, 'Redis is back', lost, 'Redis is back']);
  });
});

describe("RedisLink: Redis's time", () => {
  it('is kept on the monotonic clock: a step of this host’s clock changes nothing, and the skew is said once', () => {
    const { l, loud } = link();
    // before a first reading: this host's clock
    expect(Math.abs(l.redisNowMs() - Date.now())).toBeLessThan(50);
    const redisMs = Date.UTC(2030, 0, 1);
    l.clockReading(redisMs, redisMs - 3_600_000, monoMs());
    expect(l.skewMs).toBe(-3_600_000);
    const step = vi.spyOn(Date, 'now').mockReturnValue(Date.UTC(1999, 0, 1));
    try {
      const now = l.redisNowMs();
      expect(now - redisMs).toBeGreaterThanOrEqual(0);
      expect(now - redisMs).toBeLessThan(50);
    } finally {
      step.mockRestore();
    }
    expect(loud().map(([, m]) => m)).toEqual([expect.stringMatching(/^this host's clock is 3600 s behind Redis's/)]);
  });
});

describe('RedisLink: keys Redis evicted', () => {
  it('counted from the first reading (the baseline), across a reset of the counter, said once and again a minute later', () => {
    const { l, loud, wait } = link();
    l.evictions(40);
    expect(l.evicted).toBe(0);
    l.evictions(40);
    expect(loud()).toEqual([]);
    l.evictions(45);
    l.evictions(47);
    expect(l.evicted).toBe(7);
    // Redis restarted (or CONFIG RESETSTAT): it counts from 0 again
    l.evictions(3);
    expect(l.evicted).toBe(10);
    wait(61_000);
    l.evictions(4);
    expect(l.evicted).toBe(11);
    expect(loud().map(([level, m]) => `${level} ${m.split(' (')[0]}`)).toEqual([
      'error Redis evicted 5 keys while candlewick ran',
      'error Redis evicted 11 keys while candlewick ran',
    ]);
  });
});

describe('Quiet: how long nothing has changed, as far as this process could see', () => {
  it('counts from the last change while Redis answers', () => {
    let t = 1_000_000;
    const l = new RedisLink(() => t);
    const q = new Quiet(l, () => t);
    expect(q.for('in=5')).toBe(0);
    t += 1500;
    expect(q.for('in=5')).toBe(1500);
    expect(q.for('in=6')).toBe(0);
    t += 2500;
    expect(q.for('in=6')).toBe(2500);
  });

  it('time Redis was away is not quiet: 0 while it is away, and after it the count starts once every process has had time to be back', () => {
    let t = 1_000_000;
    const l = new RedisLink(() => t);
    const q = new Quiet(l, () => t);
    q.for('in=5');
    t += 500;
    l.error(new Error('connect ECONNREFUSED'), 'redis');
    t += 7000;
    // (a closer ticking through the outage: the marker it last read, unchanged)
    expect(q.for('in=5')).toBe(0);
    l.ready();
    t += 100;
    // back 100 ms ago, with the marker it read before the outage: an ingestor still on its backoff
    // has not handed over what it held, so this is not 7.6 s of quiet
    expect(q.for('in=5')).toBe(0);
    t += RECONNECT_WITHIN_MS;
    expect(q.for('in=5')).toBe(100);
    t += 2000;
    expect(q.for('in=5')).toBe(2100);
  });
});
