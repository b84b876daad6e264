/**
 * Trade conditions (CONDITIONS=cta-utp): which prints of a US-equity trade may set a bar's
 * open/close, high/low and volume.
 *
 * A trade's `c` array travels on the raw stream untouched. Each code is resolved to a named
 * condition (a condition's own name, e.g. "FormT", or a code from CONDITION_CODES); a trade may set
 * a field only if every one of its conditions allows it. A trade that may not add volume counts for
 * nothing (not even num_transactions). Codes the table does not know are treated as regular and
 * counted, so nothing is dropped silently.
 */

/** may set open and close */
export const OPEN_CLOSE = 1;
/** may set high and low */
export const HIGH_LOW = 2;
/** counts for volume, VWAP and num_transactions */
export const VOLUME = 4;
export const ALL = OPEN_CLOSE | HIGH_LOW | VOLUME;
/** cache flag: the condition set holds codes the table does not know */
const UNKNOWN = 8;

const ALL_RULE = ALL;
const VOLUME_ONLY = VOLUME;
const NO_LAST = HIGH_LOW | VOLUME;
const NOTHING = 0;

/**
 * The table, after the CTA and UTP plans' consolidated last-sale eligibility, with one deliberate
 * difference: Form T and extended-hours prints set prices, because candlewick builds intraday
 * bars for the extended sessions too (as exchange-published minute bars do); SESSIONS decides
 * whether those sessions make bars at all.
 */
export const CONDITION_TABLE: Readonly<Record<string, number>> = Object.freeze({
  Regular: ALL_RULE,
  Acquisition: ALL_RULE,
  AutoExecution: ALL_RULE,
  Bunched: ALL_RULE,
  CapElection: ALL_RULE,
  ClosingPrints: ALL_RULE,
  Cross: ALL_RULE,
  Distribution: ALL_RULE,
  ExtendedHours: ALL_RULE,
  FormT: ALL_RULE,
  IntermarketSweep: ALL_RULE,
  OpeningPrints: ALL_RULE,
  ReOpeningPrints: ALL_RULE,
  Rule127: ALL_RULE,
  Rule155: ALL_RULE,
  Sold: ALL_RULE,
  Split: ALL_RULE,
  StockOption: ALL_RULE,
  Stopped: ALL_RULE,
  TradeThroughExempt: ALL_RULE,
  YellowFlag: ALL_RULE,
  // reported late or away from the sequence: may set an extreme, never the open or the close
  BunchedSold: NO_LAST,
  OutOfSequence: NO_LAST,
  PriorReferencePrice: NO_LAST,
  // not a price the market traded at the moment: volume only
  AveragePrice: VOLUME_ONLY,
  DerivativelyPriced: VOLUME_ONLY,
  Cash: VOLUME_ONLY,
  Contingent: VOLUME_ONLY,
  NextDay: VOLUME_ONLY,
  OddLot: VOLUME_ONLY,
  PriceVariation: VOLUME_ONLY,
  QualifiedContingent: VOLUME_ONLY,
  Seller: VOLUME_ONLY,
  // a market centre's official price restates trades already counted
  OfficialClose: NOTHING,
  OfficialOpen: NOTHING,
  // flagged by the data vendor as far from the market: the shares traded, the price is not trusted
  Suspicious: VOLUME_ONLY,
  // present in some feeds with no published meaning: no effect
  Undocumented: ALL_RULE,
});

/**
 * The 32 bits of a Lean/AlgoSeek sale-condition word (TradeConditionFlags), bit i = name i.
 * Used by the tape reader to turn Lean tick files into named conditions.
 */
export const LEAN_CONDITION_BITS: readonly string[] = [
  'Regular',
  'Cash',
  'NextDay',
  'Seller',
  'YellowFlag',
  'IntermarketSweep',
  'OpeningPrints',
  'ClosingPrints',
  'ReOpeningPrints',
  'DerivativelyPriced',
  'FormT',
  'Sold',
  'Stopped',
  'ExtendedHours',
  'OutOfSequence',
  'Split',
  'Acquisition',
  'Bunched',
  'StockOption',
  'Distribution',
  'AveragePrice',
  'Cross',
  'PriceVariation',
  'Rule155',
  'OfficialClose',
  'PriorReferencePrice',
  'OfficialOpen',
  'CapElection',
  'AutoExecution',
  'TradeThroughExempt',
  'Undocumented',
  'OddLot',
];

/** Names of the conditions set in a Lean sale-condition word (8 hex digits). */
export function leanConditions(hexWord: string): string[] {
  const word = Number.parseInt(hexWord, 16);
  if (!Number.isFinite(word)) return [];
  const out: string[] = [];
  for (let bit = 0; bit < 32; bit++) if (Math.floor(word / 2 ** bit) % 2 === 1) out.push(LEAN_CONDITION_BITS[bit]!);
  return out;
}

/**
 * Finnhub's numeric US-equity trade conditions (the `c` array of its trade WebSocket, e.g.
 * ["1","12"]), from the table Finnhub publishes (a spreadsheet linked from its WebSocket docs; two
 * independent public copies agree), as condition names of CONDITION_TABLE. Real Finnhub messages
 * agree with it: 12 appears only on prints under 100 shares, 24 only outside regular hours.
 * The map belongs to the source, not to the rules: Massive/Polygon number their conditions
 * otherwise, so only the live feed's codes are read with it.
 */
export const FINNHUB_CONDITION_CODES: Readonly<Record<string, readonly string[]>> = Object.freeze({
  '1': ['Regular'],
  '2': ['Acquisition'],
  '3': ['AveragePrice'],
  '4': ['Bunched'],
  '5': ['Cash'],
  '6': ['Distribution'],
  '7': ['AutoExecution'],
  '8': ['IntermarketSweep'],
  '9': ['BunchedSold'],
  '10': ['PriceVariation'],
  '11': ['CapElection'],
  '12': ['OddLot'],
  '13': ['Rule127'],
  '14': ['Rule155'],
  '15': ['Sold'], // sold last
  '16': ['OfficialClose'], // market center official close
  '17': ['NextDay'],
  '18': ['OpeningPrints'], // market center opening trade
  '19': ['OpeningPrints'],
  '20': ['OfficialOpen'], // market center official open
  '21': ['PriorReferencePrice'],
  '22': ['Seller'],
  '23': ['Split'],
  '24': ['FormT'],
  '25': ['ExtendedHours', 'OutOfSequence'], // extended hours, sold out of sequence
  '26': ['Contingent'],
  '27': ['StockOption'],
  '28': ['Cross'],
  '29': ['YellowFlag'],
  '30': ['OutOfSequence'], // sold (out of sequence)
  '31': ['Stopped'],
  '32': ['DerivativelyPriced'],
  '33': ['ReOpeningPrints'], // market center re-opening trade
  '34': ['ReOpeningPrints'],
  '35': ['ClosingPrints'], // market center closing trade
  '36': ['ClosingPrints'],
  '37': ['QualifiedContingent'],
  '38': ['TradeThroughExempt'], // placeholder for 611 exempt
  '39': ['OfficialClose'], // corrected consolidated close: a restated price, not a trade
  '40': ['OpeningPrints'], // opened
  '41': ['TradeThroughExempt'],
});

export class ConditionCodesError extends Error {}

/**
 * The rules CONDITIONS selects (undefined for `all`: every print alike), for trades of `source`:
 * the live feed's (Finnhub's numeric codes, then CONDITION_CODES over them), or another source's
 * (a backfill provider's: CONDITION_CODES alone).
 */
export function conditionRules(
  cfg: { conditions: 'all' | 'cta-utp'; conditionCodes: Readonly<Record<string, readonly string[]>> },
  source: 'finnhub' | 'other' = 'finnhub',
): ConditionRules | undefined {
  if (cfg.conditions !== 'cta-utp') return undefined;
  const codes = new Map<string, readonly string[]>(source === 'finnhub' ? Object.entries(FINNHUB_CONDITION_CODES) : []);
  for (const [code, names] of Object.entries(cfg.conditionCodes)) codes.set(code, names);
  return new ConditionRules(codes);
}

/**
 * Parses a CONDITION_CODES map: a JSON object from a feed's code to a condition name or a list of
 * names, e.g. {"12": "FormT", "37": "OddLot"}. Every name must be in CONDITION_TABLE.
 */
export function parseConditionCodes(json: string, source: string): Map<string, string[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new ConditionCodesError(`${source}: not JSON (${(err as Error).message}); expected {"code": "ConditionName", ...}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConditionCodesError(`${source}: expected a JSON object {"code": "ConditionName" | ["Name", ...]}`);
  }
  const out = new Map<string, string[]>();
  const problems: string[] = [];
  for (const [code, v] of Object.entries(raw as Record<string, unknown>)) {
    const names = typeof v === 'string' ? [v] : Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
    if (!names) {
      problems.push(`code ${JSON.stringify(code)}: the value must be a condition name or a list of names`);
      continue;
    }
    const unknown = names.filter((n) => !(n in CONDITION_TABLE));
    if (unknown.length > 0)
      problems.push(`code ${JSON.stringify(code)}: unknown condition ${unknown.map((n) => JSON.stringify(n)).join(', ')}`);
    else out.set(code, names);
  }
  if (problems.length > 0) {
    throw new ConditionCodesError(`${source}: ${problems.join('; ')}. Known conditions: ${Object.keys(CONDITION_TABLE).join(', ')}`);
  }
  return out;
}

/**
 * Resolves a trade's raw `c` field (its JSON text on the stream) to an eligibility bit set, with a
 * cache per distinct text: a day of prints has a few dozen distinct condition sets.
 */
export class ConditionRules {
  private readonly cache = new Map<string, number>();
  private readonly byName = new Map<string, number>();
  /** codes met that neither the table nor CONDITION_CODES knows, with how often */
  readonly unknown = new Map<string, number>();

  constructor(private readonly codes: ReadonlyMap<string, readonly string[]> = new Map()) {
    for (const [name, rule] of Object.entries(CONDITION_TABLE)) this.byName.set(name.toLowerCase(), rule);
  }

  /** Eligibility of one code; undefined when the code is unknown. */
  private ruleOf(code: string): number | undefined {
    const names = this.codes.get(code);
    if (names) return names.reduce((acc, n) => acc & CONDITION_TABLE[n]!, ALL);
    return this.byName.get(code.toLowerCase());
  }

  /** Eligibility (OPEN_CLOSE | HIGH_LOW | VOLUME bits) of a `c` field as stored on the stream. */
  eligibility(cField: string): number {
    if (cField === '' || cField === '[]') return ALL;
    let hit = this.cache.get(cField);
    if (hit === undefined) {
      hit = this.resolve(cField);
      this.cache.set(cField, hit);
    }
    if (hit & UNKNOWN) for (const code of this.unknownIn.get(cField)!) this.unknown.set(code, (this.unknown.get(code) ?? 0) + 1);
    return hit & ALL;
  }

  private readonly unknownIn = new Map<string, string[]>();

  private resolve(cField: string): number {
    let codes: unknown;
    try {
      codes = JSON.parse(cField);
    } catch {
      codes = [cField];
    }
    let rule = ALL;
    const unknown: string[] = [];
    for (const code of Array.isArray(codes) ? codes : [codes]) {
      const r = this.ruleOf(String(code));
      if (r === undefined) unknown.push(String(code));
      else rule &= r;
    }
    if (unknown.length === 0) return rule;
    this.unknownIn.set(cField, unknown);
    return rule | UNKNOWN;
  }

  /** Moves the unknown-code counts out (for a log line and a counter). */
  takeUnknown(): Map<string, number> {
    const out = new Map(this.unknown);
    this.unknown.clear();
    return out;
  }
}
