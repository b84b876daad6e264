import { describe, expect, it } from 'vitest';
import { EquityCalendar, yearCalendar, isAroundTheClock } from './calendar.js';

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
