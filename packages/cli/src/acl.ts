import { createHash } from 'node:crypto';
import { luaCommands, scriptSource, type Config, type SCRIPTS } from '@candlewick/common';

/**
 * The Redis ACL of each role: the keys it touches (from its code and its Lua scripts' KEYS) and the
 * commands it sends, nothing more — named one by one, never by category (a category grows with each
 * Redis release). `candlewick acl` prints it as an ACL file (`redis-server --aclfile`) for
 * KEY_PREFIX; deploy/redis-acl.conf is its output for the default prefix `cw`. Key patterns: `~` read
 * and write, `%R~` read only. Scripts run under their caller's user: every command a script calls
 * is checked like the role's own, so a role is allowed the commands of the scripts it runs (read
 * from the scripts themselves) and, with BullMQ, those of BullMQ's scripts.
 */
interface RoleAcl {
  /** what the role does with Redis, for the file's comments */
  why: string;
  write: string[];
  read: string[];
  commands: string[];
}

/**
 * What every connection sends besides its role's own commands: ioredis's AUTH, ready check (INFO),
 * QUIT, SELECT (a database in REDIS_URL) and connection names (CLIENT SETNAME: BullMQ's, the
 * Cluster client's); the watch on Redis (TIME) and the eviction check (INFO); Sentinel's check that
 * the master it was given is one (ROLE); on a Cluster the slot map and state (CLUSTER SLOTS, CLUSTER
 * INFO), READONLY to replicas, READWRITE to one promoted, ASKING during a slot migration, and the
 * failover guard's PING of each master. (CLIENT SETINFO is never sent: connectRedis turns it off.)
 */
export const CONNECTION_COMMANDS = [
  'auth',
  'quit',
  'select',
  'info',
  'time',
  'ping',
  'role',
  'client|setname',
  'cluster|slots',
  'cluster|info',
  'readonly',
  'readwrite',
  'asking',
] as const;

const TRANSACTION = ['multi', 'exec', 'discard'];
/** ioredis runs a defined script by EVALSHA, and by EVAL once after a Redis that lost its scripts. */
const LUA = ['evalsha', 'eval'];

/** What candlewick's own scripts call, for the roles that run them. */
function scripts(...names: (keyof typeof SCRIPTS)[]): string[] {
  return [...LUA, ...names.flatMap((n) => luaCommands(scriptSource(n)))];
}

/**
 * BullMQ's commands (bullmq 6.7): every command its Lua scripts call (test/redis-acl.test.ts reads
 * them from the installed scripts and fails on one missing here), those it sends itself (BZPOPMIN:
 * a worker waiting for a job; queue metadata, job data and events; MULTI for a batch of jobs), and
 * HSCAN/SSCAN, which its paginate script names in a variable. Not CLIENT LIST (its worker list) nor
 * SCAN (its orphan sweep): neither is used here.
 */
export const BULLMQ_COMMANDS = [
  // its scripts
  ...['del', 'exists', 'get', 'hdel', 'hexists', 'hget', 'hgetall', 'hincrby', 'hlen', 'hmget', 'hmset', 'hset', 'incr', 'incrby'],
  ...['lindex', 'llen', 'lpop', 'lpos', 'lpush', 'lrange', 'lrem', 'lset', 'ltrim', 'persist', 'pexpire', 'pexpireat', 'pttl'],
  ...['rename', 'rpop', 'rpoplpush', 'rpush', 'sadd', 'scard', 'set', 'sismember', 'smembers', 'srem', 'time', 'type', 'unlink'],
  ...['xadd', 'xdel', 'xlen', 'xrange', 'xread', 'xtrim', 'zadd', 'zcard', 'zcount', 'zlexcount', 'zpopmin', 'zrange'],
  ...['zrangebylex', 'zrangebyscore', 'zrem', 'zremrangebyrank', 'zremrangebyscore', 'zrevrange', 'zrevrangebyscore', 'zscore'],
  ...['hscan', 'sscan'],
  // its own
  ...['bzpopmin', 'client|setname', 'evalsha', 'eval', ...TRANSACTION],
];

/**
 * The part of BullMQ's commands that only reads: what read-only Bull Board (job counts, job lists, a
 * job, its logs in a MULTI, metrics) may send and its scripts call under serve's user.
 */
export const BULLMQ_READ_COMMANDS = [
  ...['exists', 'get', 'hexists', 'hget', 'hgetall', 'hlen', 'hmget', 'lindex', 'llen', 'lpos', 'lrange', 'pttl', 'scard'],
  ...['sismember', 'smembers', 'type', 'xlen', 'xrange', 'xread', 'zcard', 'zcount', 'zlexcount', 'zrange', 'zrangebylex'],
  ...['zrangebyscore', 'zrevrange', 'zrevrangebyscore', 'zscore', 'hscan', 'sscan', 'evalsha', 'eval', ...TRANSACTION],
];

export function roleAcls(prefix: string): Record<string, RoleAcl> {
  const k = (s: string) => `${prefix}:${s}`;
  const queue = `{${prefix}:q}:*`;
  /** the data marker (epoch: GET, SET NX) and a lease (GET, SET PX, PEXPIRE, DEL) */
  const lease = ['get', 'set', 'pexpire', 'del'];
  /** the run's counters (readCounters) and whether the pipeline has drained (idleAndDrained) */
  const counters = ['hmget', 'hgetall', 'hlen'];
  /** the closer: the outbox read and trimmed, the partition clocks; the feed's amends read and applied (FEED=alpaca) */
  const closing = [
    'hget',
    'hmget',
    'hgetall',
    'xrange',
    'xrevrange',
    'xinfo|stream',
    'xdel',
    ...scripts('closeBars', 'commitActivity', 'noteAmends', 'applyFix'),
  ];
  return {
    stack: {
      why: 'starts the roles, closes what is left at the end of a replay, reads the counters',
      write: [k('*'), queue],
      read: [],
      commands: [...lease, ...counters, 'hset', 'xlen', ...closing, ...BULLMQ_COMMANDS],
    },
    ingest: {
      why: 'appends batches to the raw streams (addTrades), records gaps, rejects and backfill requests, sets the data marker',
      write: [k('trades:*'), k('clock:*'), k('feed:*'), k('backfill:*'), k('stats'), k('epoch')],
      read: [],
      // WAIT: a replica has the batches (INGEST_WAIT_REPLICAS); EXISTS: the data marker is there
      commands: ['get', 'set', 'exists', 'hget', 'hset', 'hincrby', 'xadd', 'wait', ...TRANSACTION, ...scripts('addTrades')],
    },
    aggregate: {
      why: 'reads the raw streams in the consumer group, merges batches into open bars (mergeBatch), heartbeats',
      write: [k('trades:*'), k('open:*'), k('open-index:*'), k('stats:*'), k('clock:*'), k('amends:*'), k('amend-index:*'), k('members:*')],
      read: [],
      // the group and its takeovers; membership: heartbeats (SET PX) and the others' (EXISTS)
      commands: [
        ...['xgroup|create', 'xreadgroup', 'xpending', 'xclaim', 'xautoclaim', 'hincrby', 'get', 'set', 'exists', 'del'],
        ...scripts('mergeBatch'),
      ],
    },
    close: {
      why: 'closes bars into the outbox (closeBars) and enqueues them on the BullMQ queue "bars", on its own "close" job scheduler',
      write: [
        k('trades:*'),
        k('clock:*'),
        k('open:*'),
        k('open-index:*'),
        k('outbox:*'),
        k('activity:*'),
        k('fix:*'),
        k('fix-todo:*'),
        k('fix-index:*'),
        k('closed:*'),
        k('closed-index:*'),
        k('amends:*'),
        k('amend-index:*'),
        k('backfill:*'),
        k('stats*'),
        queue,
      ],
      read: [k('feed:corrections')],
      commands: [...closing, ...counters, ...BULLMQ_COMMANDS],
    },
    write: {
      why: 'holds the writer lease, takes bar jobs from the BullMQ queue "bars", publishes bars:{interval}, counts what it wrote, reads which bars are open to create their files ahead',
      write: [queue, k('bars:*'), k('stats'), k('owner:writer')],
      read: [k('epoch'), k('open-index:*')],
      commands: [...lease, 'hincrby', 'zrange', 'xrevrange', ...scripts('publishBars'), ...BULLMQ_COMMANDS],
    },
    'pg-sink': {
      why: 'reads the closed-bar streams bars:{interval} in its own consumer group "pg-sink" (creates it, acknowledges what it committed, measures its lag); no other key, and no other stream command',
      write: [k('bars:*')],
      read: [],
      // no script and no transaction: it runs neither
      commands: ['xgroup|create', 'xreadgroup', 'xack', 'xinfo|groups', 'xinfo|stream', 'xpending', 'xrange'],
    },
    backfill: {
      why: 'reads backfill requests in its consumer group, merges provider bars into open bars (mergeBackfill)',
      write: [k('backfill:*'), k('open:*'), k('open-index:*'), k('stats:*')],
      read: [],
      commands: ['xgroup|create', 'xreadgroup', 'xautoclaim', ...scripts('mergeBackfill')],
    },
    serve: {
      why: 'reads bars, open bars, streams and queue counts for the chart page, the API and Bull Board; writes nothing',
      // the queue's keys without %R: BullMQ's read scripts declare their keys like any script (read
      // and write), and Redis checks a script's keys by that; its commands here only read
      write: [queue],
      read: [k('*')],
      commands: [...counters, 'hget', 'xpending', 'xrange', 'xrevrange', 'xread', ...BULLMQ_READ_COMMANDS],
    },
    tap: {
      why: 'reads a stream from where it is asked (tap --group needs a user that may create a group and acknowledge: not this one)',
      write: [],
      read: [k('*')],
      commands: ['xread', 'xrevrange'],
    },
  };
}

/** `-@all` and each command once, the connection's first, then the role's in order of appearance. */
function commandRules(commands: readonly string[]): string {
  return ['-@all', ...[...new Set([...CONNECTION_COMMANDS, ...commands])].map((c) => `+${c}`)].join(' ');
}

/**
 * The ACL file for `prefix`. With users (REDIS_USERS_FILE read), each role's user is named as there
 * and carries the SHA-256 of its password (never the password); without, users are `<prefix>-<role>`,
 * off, to be given a password (`ACL SETUSER cw-ingest on >password`, or `#<sha256>` in this file).
 */
export function aclFile(prefix: string, users: Config['redisUsers'] = {}): string {
  // an ACL file has no comments: what each user is for is in roleAcls and docs/operations.md
  const lines: string[] = [];
  for (const [role, acl] of Object.entries(roleAcls(prefix))) {
    const own = users[role];
    const name = own?.username ?? `${prefix}-${role}`;
    const pass = own ? `on #${createHash('sha256').update(own.password).digest('hex')}` : 'off resetpass';
    const keys = [...acl.write.map((p) => `~${p}`), ...acl.read.map((p) => `%R~${p}`)].join(' ');
    lines.push(`user ${name} reset ${pass} resetchannels ${keys} ${commandRules(acl.commands)}`);
  }
  return `${lines.join('\n')}\n`;
}
