import { createHash } from 'node:crypto';
import type { Config } from '@candlewick/common';

/**
 * The Redis ACL of each role: the keys it touches (from its code and its Lua scripts' KEYS) and the
 * commands it sends, nothing more. `candlewick acl` prints it as an ACL file (`redis-server
 * --aclfile`) for KEY_PREFIX; deploy/redis-acl.conf is its output for the default prefix `cw`.
 * Key patterns: `~` read and write, `%R~` read only. Scripts run under their caller's user, so a
 * Lua script's writes are checked like the role's own.
 */
interface RoleAcl {
  /** what the role does with Redis, for the file's comments */
  why: string;
  write: string[];
  read: string[];
  commands: string;
}

/**
 * Every user: connect, authenticate, MULTI/EXEC, the ready check (INFO), server time, Lua through
 * EVALSHA (last: INFO is @dangerous), and on a Redis Cluster its slot map and state (CLUSTER SLOTS, CLUSTER INFO).
 */
const CLUSTER = '+cluster|slots +cluster|info';
const BASE = `+@connection +@transaction +info +time +role +evalsha +eval +script|load +script|exists ${CLUSTER}`;
/** Reads and writes of data, never the server's configuration, other users, or the whole keyspace. */
const READ_WRITE = `-@all +@read +@write -@dangerous ${BASE}`;
const READ_ONLY = `-@all +@read -@dangerous ${BASE}`;

export function roleAcls(prefix: string): Record<string, RoleAcl> {
  const k = (s: string) => `${prefix}:${s}`;
  const queue = `{${prefix}:q}:*`;
  return {
    stack: {
      why: 'starts the roles, closes what is left at the end of a replay, reads the counters',
      write: [k('*'), queue],
      read: [],
      commands: READ_WRITE,
    },
    ingest: {
      why: 'appends batches to the raw streams (addTrades), records gaps, rejects and backfill requests, sets the data marker',
      write: [k('trades:*'), k('clock:*'), k('feed:*'), k('backfill:*'), k('stats'), k('epoch')],
      read: [],
      commands: READ_WRITE,
    },
    aggregate: {
      why: 'reads the raw streams in the consumer group, merges batches into open bars (mergeBatch), heartbeats',
      write: [k('trades:*'), k('open:*'), k('open-index:*'), k('stats:*'), k('clock:*'), k('amends:*'), k('amend-index:*'), k('members:*')],
      read: [],
      commands: READ_WRITE,
    },
    close: {
      why: 'closes bars into the outbox (closeBars) and enqueues them on the BullMQ queue "bars", on its own "close" job scheduler',
      write: [
        k('trades:*'),
        k('clock:*'),
        k('open:*'),
        k('open-index:*'),
        k('outbox:*'),
        k('closed:*'),
        k('closed-index:*'),
        k('amends:*'),
        k('amend-index:*'),
        k('backfill:*'),
        k('stats*'),
        queue,
      ],
      read: [],
      commands: READ_WRITE,
    },
    write: {
      why: 'holds the writer lease, takes bar jobs from the BullMQ queue "bars", publishes bars:{interval}, counts what it wrote, reads which bars are open to create their files ahead',
      write: [queue, k('bars:*'), k('stats'), k('owner:writer')],
      read: [k('epoch'), k('open-index:*')],
      commands: READ_WRITE,
    },
    'pg-sink': {
      why: 'reads the closed-bar streams bars:{interval} in its own consumer group "pg-sink" (creates it, acknowledges what it committed, measures its lag); no other key, and no other stream command',
      write: [k('bars:*')],
      read: [],
      // no script and no transaction: it runs neither
      commands: `-@all +@connection +info +time +role ${CLUSTER} +xgroup|create +xreadgroup +xack +xinfo|groups +xinfo|stream +xpending +xrange`,
    },
    backfill: {
      why: 'reads backfill requests, merges provider bars into open bars (mergeBackfill)',
      write: [k('backfill:*'), k('open:*'), k('open-index:*'), k('stats:*')],
      read: [],
      commands: READ_WRITE,
    },
    serve: {
      why: 'reads bars, open bars, streams and queue counts for the chart page, the API and Bull Board; writes nothing',
      write: [],
      read: [k('*'), queue],
      commands: READ_ONLY,
    },
    tap: {
      why: 'reads a stream (tap --group needs a user that may write the stream: its group lives there)',
      write: [],
      read: [k('*')],
      commands: READ_ONLY,
    },
  };
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
    lines.push(`user ${name} reset ${pass} resetchannels ${keys} ${acl.commands}`);
  }
  return `${lines.join('\n')}\n`;
}
