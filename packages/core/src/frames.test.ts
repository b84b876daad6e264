import { describe, expect, it } from 'vitest';
import { JSON_NUMBER, readFrame } from './frames.js';

describe('readFrame', () => {
  it('reads each kind of Finnhub frame', () => {
    expect(readFrame('{"type":"trade","data":[{"s":"A"}]}')).toEqual({ kind: 'trade', data: [{ s: 'A' }] });
    expect(readFrame('{"type":"ping"}')).toEqual({ kind: 'ping' });
    expect(readFrame('{"type":"error","msg":"too many symbols"}')).toEqual({ kind: 'error', msg: 'too many symbols' });
    expect(readFrame('{"type":"trade"}')).toEqual({ kind: 'no-data' });
    expect(readFrame('{"type":"trade","data":{}}')).toEqual({ kind: 'no-data' });
    expect(readFrame('not json {')).toEqual({ kind: 'not-json' });
    expect(readFrame('{"type":"news"}')).toEqual({ kind: 'unknown', type: 'news' });
    expect(readFrame('null')).toEqual({ kind: 'unknown', type: undefined });
    expect(readFrame('[1]')).toEqual({ kind: 'unknown', type: undefined });
  });

  it('JSON_NUMBER takes JSON numbers only', () => {
    for (const x of ['0', '-1', '1.5', '1e-7', '2E+3', '0.00141342']) expect(JSON_NUMBER.test(x), x).toBe(true);
    for (const x of ['01', '1.', '.5', '+1', 'NaN', 'Infinity', '1e', '', ' 1']) expect(JSON_NUMBER.test(x), x).toBe(false);
  });
});
