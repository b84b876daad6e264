import { describe, expect, it } from 'vitest';
import { BarCalendar, EquityCalendar, yearCalendar, isAroundTheClock } from './calendar.js';
import { parseInterval } from './time.js';

const cal = new EquityCalendar();
const at = (s: string) => Date.parse(s);

describe('US-equity calendar', () => {
  it('knows the holidays of a year, with weekend shifts and one-off closures', () => {
    expect([...yearCalendar(2013).holidays].sort()).toEqual([
      '2013-01-01',
      '2013-01-21',
      '2013-02-18',
      '2013-03-29',
      '2013-05-27',
      '2013-07-04',
      '2013-09-02',
      '2013-11-28',
      '2013-12-25',
    ]);
    expect(cal.isHoliday('2021-12-24')).toBe(true); // Christmas on a Saturday: Friday off
    expect(cal.isHoliday('2021-12-31')).toBe(false); // New Year 2022 on a Saturday: not made up
    expect(cal.isHoliday('2022-06-20')).toBe(true); // Juneteenth on a Sunday: Monday off
    expect(cal.isHoliday('2021-06-18')).toBe(false); // before the exchange observed Juneteenth
    expect(cal.isHoliday('2015-07-03')).toBe(true); // July 4 on a Saturday
    expect(cal.isHoliday('2018-12-05')).toBe(true); // day of mourning
    expect(cal.isHoliday('2025-04-18')).toBe(true); // Good Friday
  });

  it('knows the early closes', () => {
    expect([...yearCalendar(2013).earlyCloses].sort()).toEqual(['2013-07-03', '2013-11-29', '2013-12-24']);
    expect(cal.isEarlyClose('2022-07-01')).toBe(false); // July 4 on a Monday: no early close
    expect(cal.isEarlyClose('2021-12-23')).toBe(false);
    expect(cal.isEarlyClose('2024-12-24')).toBe(true);
  });

  it('marks sessions in New York time, across both DST offsets', () => {
    expect(cal.session(at('2013-10-07T07:59:59Z'))).toBe('closed'); // 03:59:59 EDT
    expect(cal.session(at('2013-10-07T08:00:00Z'))).toBe('pre'); // 04:00 EDT
    expect(cal.session(at('2013-10-07T13:29:59.999Z'))).toBe('pre');
    expect(cal.session(at('2013-10-07T13:30:00Z'))).toBe('regular'); // 09:30 EDT
    expect(cal.session(at('2013-10-07T20:00:00Z'))).toBe('post'); // 16:00 EDT
    expect(cal.session(at('2013-10-08T00:00:00Z'))).toBe('closed'); // 20:00 EDT
    expect(cal.session(at('2013-12-02T14:30:00Z'))).toBe('regular'); // 09:30 EST
    expect(cal.session(at('2013-12-02T14:29:00Z'))).toBe('pre');
  });

  it('closes on weekends and holidays, early on early-close days', () => {
    expect(cal.session(at('2013-10-12T15:00:00Z'))).toBe('closed'); // Saturday
    expect(cal.session(at('2013-12-25T15:00:00Z'))).toBe('closed'); // Christmas
    expect(cal.session(at('2013-11-29T17:59:00Z'))).toBe('regular'); // 12:59 EST the day after Thanksgiving
    expect(cal.session(at('2013-11-29T18:00:00Z'))).toBe('post'); // 13:00 EST: after-hours
    expect(cal.session(at('2013-11-29T22:00:00Z'))).toBe('closed'); // 17:00 EST
  });

  it('says clearly when a date is outside the years it covers', () => {
    expect(() => cal.session(at('2035-01-02T15:00:00Z'))).toThrow(/covers 2000-2030; 2035 is outside it/);
  });

  it('treats symbols with an exchange prefix as around the clock', () => {
    expect(isAroundTheClock('BINANCE:BTCUSDT')).toBe(true);
    expect(isAroundTheClock('AAPL')).toBe(false);
  });
});

describe('the bar calendar', () => {
  const intervals = ['1min', '1h', '1d'].map(parseInterval);
  const [m1, h1, d1] = intervals as [ReturnType<typeof parseInterval>, ReturnType<typeof parseInterval>, ReturnType<typeof parseInterval>];
  const ny = (settings: { sessions?: 'regular' | 'extended' | 'all'; align?: 'clock' | 'session' } = {}) =>
    new BarCalendar({ tz: 'America/New_York', intervals, graceMs: 2000, ...settings });

  it('derives the base interval and the daily intervals from INTERVALS', () => {
    const c = ny();
    expect(c.baseMs).toBe(60_000);
    expect([...c.days]).toEqual(['1d']);
    expect(c.interval('1h')).toBe(h1);
    expect(c.interval('4h')).toBeUndefined();
  });

  it('anchors equity windows at the open with ALIGN=session, never 24/7 symbols or daily bars', () => {
    const t = at('2013-10-10T14:10:00Z'); // 10:10 EDT
    const session = ny({ align: 'session' });
    expect(session.window('AIG', t, h1)).toEqual([at('2013-10-10T13:30:00Z'), at('2013-10-10T14:30:00Z')]);
    expect(session.window('BINANCE:XRPETH', t, h1)).toEqual([at('2013-10-10T14:00:00Z'), at('2013-10-10T15:00:00Z')]);
    expect(session.window('AIG', t, d1)).toEqual([at('2013-10-10T04:00:00Z'), at('2013-10-11T04:00:00Z')]);
    expect(ny().window('AIG', t, h1)).toEqual([at('2013-10-10T14:00:00Z'), at('2013-10-10T15:00:00Z')]);
    expect(session.barsAt('AIG', t).map((b) => b.id)).toEqual([
      `1min|AIG|${at('2013-10-10T14:10:00Z')}`,
      `1h|AIG|${at('2013-10-10T13:30:00Z')}`,
      `1d|AIG|${at('2013-10-10T04:00:00Z')}`,
    ]);
  });

  it("closes an equity's daily bar at the end of its last kept session, a 24/7 symbol's at midnight", () => {
    const t = at('2013-11-29T15:00:00Z'); // the day after Thanksgiving: an early close
    const dayEnd = (c: BarCalendar, s: string) => c.barsAt(s, t)[2]!.end;
    expect(dayEnd(ny({ sessions: 'regular' }), 'AIG')).toBe(at('2013-11-29T18:00:00Z')); // 13:00 EST
    expect(dayEnd(ny({ sessions: 'extended' }), 'AIG')).toBe(at('2013-11-29T22:00:00Z')); // 17:00 EST
    expect(dayEnd(ny(), 'AIG')).toBe(at('2013-11-30T05:00:00Z'));
    expect(dayEnd(ny({ sessions: 'regular' }), 'BINANCE:XRPETH')).toBe(at('2013-11-30T05:00:00Z'));
    expect(ny({ sessions: 'regular' }).barsAt('AIG', t)[1]!.end).toBe(at('2013-11-29T16:00:00Z')); // intraday: the window's end
  });

  it('keeps trades of the kept sessions, and gives flat bars to session windows and trading days only', () => {
    const pre = at('2013-10-10T12:00:00Z'); // 08:00 EDT
    const night = at('2013-10-10T02:00:00Z'); // 22:00 EDT the day before
    const regular = ny({ sessions: 'regular' });
    expect([regular.keeps('AIG', pre), regular.keeps('BINANCE:XRPETH', pre), ny().keeps('AIG', night)]).toEqual([false, true, true]);
    const uncovered: number[] = [];
    expect(regular.keeps('AIG', at('2040-01-03T15:00:00Z'), uncovered)).toBe(false);
    expect(uncovered).toEqual([2040]);
    // SESSIONS=all keeps every trade, but the closed hours get no flat bars
    expect([ny().hasFlatBar('AIG', pre, m1), ny().hasFlatBar('AIG', night, m1), regular.hasFlatBar('AIG', pre, m1)]).toEqual([
      true,
      false,
      false,
    ]);
    const thanksgiving = at('2013-11-28T05:00:00Z');
    expect([ny().hasFlatBar('AIG', thanksgiving, d1), ny().hasFlatBar('BINANCE:XRPETH', thanksgiving, d1)]).toEqual([false, true]);
  });

  it('judges lateness and closing with GRACE_MS', () => {
    const c = ny();
    const t = at('2013-10-10T14:10:30Z'); // its base window ends at 14:11:00
    const end = at('2013-10-10T14:11:00Z');
    expect([c.isLate('AIG', t, 0), c.isLate('AIG', t, end + 1999), c.isLate('AIG', t, end + 2000)]).toEqual([false, false, true]);
    expect([c.watermarkFor(t, t + 2000), c.watermarkFor(t, t + 2001)]).toEqual([0, t + 2001]);
    expect(c.closeHorizon(end + 2000)).toBe(end);
  });
});
