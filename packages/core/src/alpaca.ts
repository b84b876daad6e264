// What Alpaca's stream and its REST history share: times in RFC-3339 with nanoseconds, read to the
// millisecond the same way by the live adapter and the backfill, and the SIP's condition letters the
// stand-ins (replay-server, provider-server) write for a tape's condition names.

/**
 * An RFC-3339 time with up to nanoseconds (2021-02-22T15:51:44.208123456Z, or with an offset) as
 * Unix ms, the fraction cut to whole ms (floor, so a trade never moves into the next millisecond,
 * nor the next bar); anything else is handed on as it came, for validation to refuse.
 */
export function rfc3339Ms(t: unknown): unknown {
  if (typeof t !== 'string') return t;
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/i.exec(t);
  if (!m) return t;
  const whole = Date.parse(`${m[1]}${m[3]!.toUpperCase()}`);
  if (!Number.isFinite(whole)) return t;
  const ms = m[2] ? Number(m[2].padEnd(9, '0').slice(0, 3)) : 0;
  return whole + ms;
}

/**
 * The SIP's sale-condition letters (the CTA plan's, as Alpaca sends them for NYSE-listed stocks; the
 * UTP plan's where the CTA has none) for the condition names a tape carries (CONDITION_TABLE's, e.g.
 * a Lean tape's); a name without one is left out of the replayed `c`.
 */
export const ALPACA_CONDITION_LETTERS: Readonly<Record<string, string>> = Object.freeze({
  Regular: '@',
  Acquisition: 'A',
  AveragePrice: 'B',
  Cash: 'C',
  Distribution: 'D',
  AutoExecution: 'E',
  IntermarketSweep: 'F',
  BunchedSold: 'G',
  PriceVariation: 'H',
  OddLot: 'I',
  Rule127: 'K',
  Rule155: 'K',
  OfficialClose: 'M',
  NextDay: 'N',
  OpeningPrints: 'O',
  PriorReferencePrice: 'P',
  OfficialOpen: 'Q',
  Seller: 'R',
  Split: 'S',
  ExtendedHours: 'T',
  FormT: 'T',
  Contingent: 'V',
  Cross: 'X',
  YellowFlag: 'Y',
  OutOfSequence: 'Z',
  Stopped: '1',
  DerivativelyPriced: '4',
  ReOpeningPrints: '5',
  ClosingPrints: '6',
  QualifiedContingent: '7',
  TradeThroughExempt: '8',
});

/** A tape trade's condition names as the SIP's letters, each once, in the tape's order. */
export function alpacaConditions(names: readonly string[]): string[] {
  const letters: string[] = [];
  for (const name of names) {
    const l = ALPACA_CONDITION_LETTERS[name];
    if (l !== undefined && !letters.includes(l)) letters.push(l);
  }
  return letters;
}

/**
 * A time in ms as Alpaca writes it: RFC-3339 with nanoseconds, the digits below the millisecond
 * `subMs` (0..999999) — a reader must cut them, never round them into the next millisecond.
 */
export function alpacaTime(ms: number, subMs: number): string {
  return `${new Date(ms).toISOString().slice(0, -1)}${String(subMs).padStart(6, '0')}Z`;
}

/**
 * The nanoseconds below the millisecond the stand-ins give the tape's `serial`-th trade (from 1):
 * spread over 0..999999, the same for a trade whether it is streamed or served as history.
 */
export function alpacaSubMs(serial: number): number {
  return (serial * 7919) % 1_000_000;
}

/**
 * The id an Alpaca trade is carried under on the raw stream: Alpaca's `i` is unique per symbol,
 * exchange and day only (the FINRA ADF's, exchange D, is offset per trade reporting facility), so
 * with its exchange, `N:52983525029461`; `i` alone where the message names no exchange. Undefined
 * where `i` is not a whole number.
 */
export function alpacaTradeIdOf(x: unknown, i: unknown): string | undefined {
  const whole = (typeof i === 'number' && Number.isSafeInteger(i) && i >= 0) || (typeof i === 'string' && /^\d+$/.test(i));
  if (!whole) return undefined;
  return typeof x === 'string' && /^[A-Za-z0-9]{1,4}$/.test(x) ? `${x}:${String(i)}` : String(i);
}
