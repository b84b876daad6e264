// The pure core: windows in a time zone, the exchange calendar, exact sums, what a bar is and how
// partial bars merge, trade validation and the raw stream's trade fields, trade conditions, the
// batch fold (pre-aggregation) and the backfill splice. No I/O: every service imports it.
export * from './time.js';
export * from './calendar.js';
export * from './decimal.js';
export * from './bar.js';
export * from './trade.js';
export * from './frames.js';
export * from './conditions.js';
export * from './preaggregate.js';
export * from './splice.js';
export * from './future.js';
export * from './alpaca.js';
export * from './activity.js';
export * from './amend.js';
