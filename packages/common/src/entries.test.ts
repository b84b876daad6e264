import { describe, expect, it } from 'vitest';
import { decodeBarEntry, decodeOutboxEntries, encodeBarEntry, encodeBarEntryJson, outboxPacked, type BarRowCells } from './entries.js';
import { parseBarsJob } from './jobs.js';

const cells: BarRowCells = {
  timestamp: '2026-12-04T10:00:00-05:00',
  open: '101.5',
  high: '102',
  low: '100.25',
  close: '101',
  vwap: '101.123456789012',
  volume: '1200',
  trades: '7',
  complete: true,
  sources: 'live',
};

describe('bars:{interval} entries as JSON text', () => {
  it('are the text JSON.stringify gives, and read back as the bar they were written from, for any symbol and cells', () => {
    const symbols = ['AAPL', 'BINANCE:BTCUSDT', 'BRK.B', 'a"b', 'back\\slash', 'tab\there', 'new\nline', 'é€', '😀', '\ud800lone', ''];
    for (const symbol of symbols)
      for (const c of [cells, { ...cells, vwap: '', trades: '', complete: false, sources: 'live+finnhub-1m', lost: true }])
        for (const rev of [0, 3]) {
          const json = encodeBarEntryJson(symbol, 1796500000000, rev, c);
          const fields = JSON.parse(json) as string[];
          expect(JSON.stringify(fields)).toBe(json);
          expect(encodeBarEntry(symbol, 1796500000000, rev, c)).toEqual(fields);
          const { id, interval, trades, ...bar } = decodeBarEntry('1-0', '1min', fields);
          expect([id, interval, trades]).toEqual(['1-0', '1min', c.trades === '' ? undefined : Number(c.trades)]);
          const { trades: _count, ...written } = c;
          expect(bar).toEqual({ symbol, start: 1796500000000, rev, ...written });
        }
    expect(JSON.parse(encodeBarEntryJson('X', 1, 0, cells, ',"end","2","bar","3"'))).toEqual([
      ...encodeBarEntry('X', 1, 0, cells),
      'end',
      '2',
      'bar',
      '3',
    ]);
  });
});

describe('closed bars handed on packed', () => {
  it('an outbox entry is passed on as it is and unpacked by the writer into the bars it holds, in order', () => {
    const list = [
      ['1min|AAPL|1796500000000', '1|k|1|1|1|k|1|1|1', 0],
      ['5min|BRK.B|1796500000000', '2|k|2|2|2|k|1|2|1', 2],
    ];
    const fields = ['bars', JSON.stringify(list)];
    const { packed, bars } = outboxPacked(fields);
    expect(packed).toBe(fields[1]);
    expect(bars).toEqual(list);
    const job = parseBarsJob(JSON.parse(JSON.stringify({ packed: [packed, packed] })));
    expect(job.bars).toEqual([...decodeOutboxEntries(fields), ...decodeOutboxEntries(fields)]);
    expect(job.bars[1]).toEqual({ interval: '5min', symbol: 'BRK.B', start: 1796500000000, state: '2|k|2|2|2|k|1|2|1', rev: 2 });
  });

  it('an entry of one bar, as earlier versions wrote it, is packed the same way', () => {
    const { packed, bars } = outboxPacked(['bar', '1min|AAPL|60000', 'state', '1|k|1|1|1|k|1|1|1', 'rev', '1']);
    expect(bars).toEqual([['1min|AAPL|60000', '1|k|1|1|1|k|1|1|1', 1]]);
    expect(parseBarsJob({ packed: [packed] }).bars).toEqual([
      { interval: '1min', symbol: 'AAPL', start: 60000, state: '1|k|1|1|1|k|1|1|1', rev: 1 },
    ]);
  });

  it('a job of another shape is refused, saying what is wrong', () => {
    expect(() => parseBarsJob({ packed: ['{"a":1}'] })).toThrow(/a bars job of another shape: closed bars whose list is not a list/);
    expect(() => parseBarsJob({ packed: ['[["1min|AAPL|x","s",0]]'] })).toThrow(/an id of another shape: 1min\|AAPL\|x/);
    expect(() => parseBarsJob({ packed: ['[["1min|AAPL|1","s",-1]]'] })).toThrow(/a bar of another shape/);
    // a job of an earlier version (bars as objects) is still taken
    expect(parseBarsJob({ bars: [{ interval: '1min', symbol: 'A', start: 1, state: 's' }] }).bars).toEqual([
      { interval: '1min', symbol: 'A', start: 1, state: 's', rev: 0 },
    ]);
  });
});
