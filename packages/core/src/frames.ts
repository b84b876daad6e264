/**
 * Finnhub's WebSocket frames, read once for the ingestor (a live or replayed feed) and for
 * `candlewick bars` (a tape of recorded frames): `{"type":"trade","data":[…]}`, `{"type":"ping"}`,
 * `{"type":"error","msg":…}`. Each trade of a data array is validated alone (trade.ts).
 */

/** A JSON number as written: what the replay server sends unquoted, and `bars` reads as a number. */
export const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

/** One frame, read: its trades (unvalidated), a keep-alive, the feed's error, or something unreadable. */
export type Frame =
  | { kind: 'trade'; data: unknown[] }
  | { kind: 'ping' }
  /** the feed's own error message (e.g. too many symbols): the connection stays up */
  | { kind: 'error'; msg: string }
  /** not JSON */
  | { kind: 'not-json' }
  /** a trade message without a data array */
  | { kind: 'no-data' }
  /** JSON of another type (or none) */
  | { kind: 'unknown'; type: unknown };

const PING: Frame = Object.freeze({ kind: 'ping' });
const NOT_JSON: Frame = Object.freeze({ kind: 'not-json' });
const NO_DATA: Frame = Object.freeze({ kind: 'no-data' });

export function readFrame(text: string): Frame {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
  const m = msg !== null && typeof msg === 'object' ? (msg as { type?: unknown; data?: unknown; msg?: unknown }) : undefined;
  const type = m?.type;
  if (type === 'trade') return Array.isArray(m!.data) ? { kind: 'trade', data: m!.data } : NO_DATA;
  if (type === 'ping') return PING;
  if (type === 'error') return { kind: 'error', msg: String(m!.msg ?? '') };
  return { kind: 'unknown', type };
}
