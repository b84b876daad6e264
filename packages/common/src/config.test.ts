import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('has the documented defaults: replay without a token, live with one', () => {
    const c = loadConfig({});
    expect(c.mode).toBe('replay');
    expect(c.clock).toBe('event');
    expect(c.intervals.map((i) => i.name)).toEqual(['1min', '5min', '15min', '30min', '1h']);
    expect(c.baseMs).toBe(60_000);
    expect(c.tz).toBe('America/New_York');
    expect(c.graceMs).toBe(2000);
    expect(c.dataDir).toBe('./data');
    expect(c.backfill).toBe(false);
    const live = loadConfig({ FINNHUB_TOKEN: 'x', SYMBOLS: 'AAPL, BINANCE:BTCUSDT' });
    expect(live.mode).toBe('live');
    expect(live.clock).toBe('wall');
    expect(live.symbols).toEqual(['AAPL', 'BINANCE:BTCUSDT']);
    expect(Object.isFrozen(live)).toBe(true);
  });

  it('sorts and de-duplicates intervals, flags override the environment', () => {
    const c = loadConfig({ INTERVALS: '1h,5min,60min' }, { GRACE_MS: '500' });
    expect(c.intervals.map((i) => i.name)).toEqual(['5min', '1h']);
    expect(c.graceMs).toBe(500);
  });

  it('parses booleans explicitly: "false" is false', () => {
    expect(loadConfig({ LOG_PRETTY: 'false' }).logPretty).toBe(false);
    expect(loadConfig({ LOG_PRETTY: 'true' }).logPretty).toBe(true);
  });

  it.each([
    [{ GRACE_MS: '-1' }, /GRACE_MS="-1": must be a whole number/],
    [{ GRACE_MS: 'soon' }, /GRACE_MS/],
    [{ INTERVALS: '1min,7sec' }, /INTERVALS: invalid interval "7sec"/],
    [{ BAR_TZ: 'Europe/Atlantis' }, /BAR_TZ: invalid time zone/],
    [{ CLOCK: 'sundial' }, /CLOCK="sundial": must be wall or event/],
    [{ MODE: 'live' }, /MODE=live needs FINNHUB_TOKEN/],
    [{ FINNHUB_TOKEN: 'x' }, /SYMBOLS: name the symbols to subscribe in live mode/],
    [{ SESSIONS: 'lunch' }, /SESSIONS="lunch": must be regular, extended or all/],
    [{ LATE: 'maybe' }, /LATE="maybe": must be drop or amend/],
    [{ STREAM_PARTITIONS: '0' }, /STREAM_PARTITIONS/],
    [{ LOG_PRETTY: 'maybe' }, /LOG_PRETTY="maybe": must be true or false/],
    [{ SYMBOLS: 'AAPL,BAD SYMBOL' }, /SYMBOLS: "BAD SYMBOL"/],
    [{ TRADES_RETENTION: 'forever' }, /TRADES_RETENTION/],
    [{ CONDITIONS: 'strict' }, /CONDITIONS="strict": must be all or cta-utp/],
    [{ CONDITION_CODES: '/nonexistent/codes.json' }, /CONDITION_CODES: cannot read \/nonexistent\/codes.json/],
  ])('rejects %j naming the variable and the rule', (env, msg) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(msg);
  });

  it('never echoes the token in an error', () => {
    try {
      loadConfig({ FINNHUB_TOKEN: 'sekrit-value', GRACE_MS: 'x' });
    } catch (e) {
      expect(String((e as Error).message)).not.toContain('sekrit-value');
    }
  });

  it('reads CONDITION_CODES into the config and names a bad entry', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cw-codes-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, '{"12": "FormT", "37": ["OddLot"]}');
    expect(loadConfig({ CONDITIONS: 'cta-utp', CONDITION_CODES: good }).conditionCodes).toEqual({ '12': ['FormT'], '37': ['OddLot'] });
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"12": "Form T"}');
    expect(() => loadConfig({ CONDITION_CODES: bad })).toThrow(/CONDITION_CODES: .*bad.json: code "12": unknown condition "Form T"/);
  });
});

describe('secrets from files (X_FILE)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-secrets-'));
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it('reads FINNHUB_TOKEN_FILE, MASSIVE_API_KEY_FILE and REDIS_PASSWORD_FILE, trimmed; an empty file is no secret', () => {
    const c = loadConfig({
      FINNHUB_TOKEN_FILE: file('token', 'abc123\n'),
      MASSIVE_API_KEY_FILE: file('key', '  k-9 \n'),
      REDIS_PASSWORD_FILE: file('pw', 's3cret\n'),
      SYMBOLS: 'AAPL',
    });
    expect([c.finnhubToken, c.massiveApiKey, c.redisPassword, c.mode]).toEqual(['abc123', 'k-9', 's3cret', 'live']);
    const empty = loadConfig({ FINNHUB_TOKEN_FILE: file('empty', '\n') });
    expect([empty.finnhubToken, empty.mode]).toEqual([undefined, 'replay']);
  });

  it('names the variable, never the secret: a file it cannot read, or a secret given both ways', () => {
    let err: unknown;
    try {
      loadConfig({ REDIS_PASSWORD_FILE: join(dir, 'missing'), FINNHUB_TOKEN: 'tok-1', FINNHUB_TOKEN_FILE: file('t2', 'tok-2') });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/REDIS_PASSWORD_FILE=".*missing": cannot read it \(ENOENT\)/);
    expect(msg).toMatch(/FINNHUB_TOKEN and FINNHUB_TOKEN_FILE are both set/);
    expect(msg).not.toMatch(/tok-1|tok-2/);
  });
});

describe('Sentinel, TLS and per-role users', () => {
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return '';
    } catch (err) {
      return (err as ConfigError).message;
    }
  };

  it('reads the sentinels, the users file (a role per line) and the TLS files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cw-access-'));
    writeFileSync(join(dir, 'users'), '# role user password\ningest cw-ingest pw-ingest\nserve cw-serve pw-serve\n');
    writeFileSync(join(dir, 'ca.pem'), 'x');
    const c = loadConfig({
      REDIS_SENTINELS: '10.0.0.1:26379, 10.0.0.2:26379',
      REDIS_USERS_FILE: join(dir, 'users'),
      REDIS_TLS_CA_FILE: join(dir, 'ca.pem'),
    });
    expect(c.redisSentinels).toEqual(['10.0.0.1:26379', '10.0.0.2:26379']);
    expect(c.redisSentinelMaster).toBe('mymaster');
    expect(c.redisUsers.serve).toEqual({ username: 'cw-serve', password: 'pw-serve' });
    expect(loadConfig({}).redisUsers).toEqual({});
  });

  it('names each setting that is wrong, never a password', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cw-access-'));
    writeFileSync(join(dir, 'users'), 'ingest cw-ingest secret-pw extra\n');
    const msg = problems({
      REDIS_SENTINELS: '10.0.0.1',
      REDIS_CLUSTER: 'on',
      REDIS_URL: 'redis://127.0.0.1:6379',
      REDIS_TLS_CA_FILE: join(dir, 'missing.pem'),
      REDIS_TLS_CERT_FILE: join(dir, 'users'),
      REDIS_USERS_FILE: join(dir, 'users'),
    });
    expect(msg).toMatch(/REDIS_SENTINELS: "10.0.0.1" is not host:port/);
    expect(msg).toMatch(/REDIS_SENTINELS and REDIS_CLUSTER=on/);
    expect(msg).toMatch(/REDIS_TLS_CA_FILE=".*missing.pem": cannot read it \(ENOENT\)/);
    expect(msg).toMatch(/REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together/);
    expect(msg).toMatch(/REDIS_USERS_FILE=".*": line 1: write "role user password"/);
    expect(msg).not.toContain('secret-pw');
    expect(problems({ REDIS_URL: 'redis://h:6379', REDIS_TLS_SERVERNAME: 'h' })).toMatch(/write REDIS_URL as rediss:\/\//);
    writeFileSync(join(dir, 'users2'), 'reader cw-r pw\n');
    expect(problems({ REDIS_USERS_FILE: join(dir, 'users2') })).toMatch(/line 1: "reader" is not a role/);
  });
});

describe('the settings table', () => {
  it('every setting is in the configuration table of docs/configuration.md, by its variable', async () => {
    const { readFileSync } = await import('node:fs');
    const table = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
    const { settingsTable } = await import('./config.js');
    const missing = settingsTable()
      .filter((s) => !table.includes(`\`${s.env}\``))
      .map((s) => s.env);
    expect(missing).toEqual([]);
  });
});

describe('FEED=alpaca', () => {
  it('half of the credentials is an error naming the missing half, not a quiet replay', () => {
    expect(() => loadConfig({ FEED: 'alpaca', ALPACA_API_KEY: 'AKID', SYMBOLS: 'AAPL' })).toThrow(
      /ALPACA_API_KEY is set but ALPACA_API_SECRET is not/,
    );
    expect(() => loadConfig({ FEED: 'alpaca', ALPACA_API_SECRET: 'S', SYMBOLS: 'AAPL' })).toThrow(
      /ALPACA_API_SECRET is set but ALPACA_API_KEY is not/,
    );
    expect(loadConfig({ FEED: 'alpaca', ALPACA_API_KEY: 'AKID', ALPACA_API_SECRET: 'S', SYMBOLS: 'AAPL' }).mode).toBe('live');
  });
  it("a crypto pair or another venue's name is refused before anything starts, for the stocks streams", () => {
    expect(() => loadConfig({ FEED: 'alpaca', SYMBOLS: 'BTC/USD' })).toThrow(/"BTC\/USD" is not a US stock ticker \(FEED=alpaca/);
    expect(() => loadConfig({ FEED: 'massive', SYMBOLS: 'AAPL,BINANCE:XRPETH' })).toThrow(
      /"BINANCE:XRPETH" is not a US stock ticker \(FEED=massive/,
    );
  });
});

describe('FEED=binance', () => {
  it('runs live without a key, every bare pair named BINANCE:<PAIR> for every role, history from Binance', () => {
    const c = loadConfig({ FEED: 'binance', SYMBOLS: 'btcusdt,BINANCE:ETHUSDT' });
    expect(c.mode).toBe('live');
    expect(c.symbols).toEqual(['BINANCE:BTCUSDT', 'BINANCE:ETHUSDT']);
    expect(c.backfillProvider).toBe('binance');
  });
  it('refuses, before anything starts and quoting what was written: not a pair, one pair twice, more than one connection carries', () => {
    const msg = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as Error).message;
      }
      return '';
    };
    expect(msg({ FEED: 'binance', SYMBOLS: 'AAPL.US' })).toMatch(/SYMBOLS: "AAPL.US" is not a Binance pair/);
    expect(msg({ FEED: 'binance', SYMBOLS: 'AAPL.US' })).not.toMatch(/name the symbols/);
    expect(msg({ FEED: 'binance', SYMBOLS: 'COINBASE:BTCUSD' })).toMatch(/"COINBASE:BTCUSD" is not a Binance pair/);
    expect(msg({ FEED: 'binance', SYMBOLS: 'BTCUSDT,BINANCE:btcusdt' })).toMatch(
      /"BTCUSDT" and "BINANCE:btcusdt" are one Binance pair, BINANCE:BTCUSDT/,
    );
    const many = Array.from({ length: 1025 }, (_, k) => `P${k}USDT`).join(',');
    expect(msg({ FEED: 'binance', SYMBOLS: many })).toMatch(/1025 Binance pairs; one connection to Binance carries at most 1024/);
    expect(msg({ FEED: 'binanc' })).toMatch(/FEED="binanc": must be finnhub, binance, massive or alpaca/);
  });
  it("Binance's history alone (BACKFILL_PROVIDER=binance) names a bare pair the same way", () => {
    expect(loadConfig({ BACKFILL_PROVIDER: 'binance', SYMBOLS: 'xrpeth' }).symbols).toEqual(['BINANCE:XRPETH']);
  });
  it('MODE=live without FINNHUB_TOKEN is an error for Finnhub only, saying Binance needs none', () => {
    expect(() => loadConfig({ MODE: 'live', SYMBOLS: 'AAPL' })).toThrow(/MODE=live needs FINNHUB_TOKEN.*FEED=binance: no key/);
    expect(loadConfig({ FEED: 'binance', MODE: 'live', SYMBOLS: 'BTCUSDT' }).feed).toBe('binance');
  });
});

describe('FEED=massive', () => {
  it("runs live with MASSIVE_API_KEY, replays without it; history from Massive too; the stocks socket's URL", () => {
    const live = loadConfig({ FEED: 'massive', MASSIVE_API_KEY: 'k', SYMBOLS: 'AAPL' });
    expect(live.mode).toBe('live');
    expect(live.backfillProvider).toBe('massive');
    expect(live.massiveWsUrl).toBe('wss://socket.massive.com/stocks');
    // a Finnhub token does not make a Massive feed live
    expect(loadConfig({ FEED: 'massive', FINNHUB_TOKEN: 't' }).mode).toBe('replay');
    expect(() => loadConfig({ FEED: 'massive', MASSIVE_WS_URL: 'https://x' })).toThrow(/MASSIVE_WS_URL.*ws:\/\/ or wss:\/\/ URL/);
  });
  it('MODE=live without MASSIVE_API_KEY is an error naming it', () => {
    expect(() => loadConfig({ FEED: 'massive', MODE: 'live', SYMBOLS: 'AAPL' })).toThrow(
      /MODE=live with FEED=massive needs MASSIVE_API_KEY/,
    );
  });
});

describe('FEED=alpaca', () => {
  it("runs live with ALPACA_API_KEY and ALPACA_API_SECRET (or their _FILE forms), replays without them; IEX's URL by default", () => {
    const live = loadConfig({ FEED: 'alpaca', ALPACA_API_KEY: 'AK', ALPACA_API_SECRET: 'sec', SYMBOLS: 'AAPL' });
    expect(live.mode).toBe('live');
    expect(live.alpacaWsUrl).toBe('wss://stream.data.alpaca.markets/v2/iex');
    // another feed's key does not make the feed live (the key without its secret is an error: below)
    expect(loadConfig({ FEED: 'alpaca', FINNHUB_TOKEN: 't' }).mode).toBe('replay');
    expect(() => loadConfig({ FEED: 'alpaca', ALPACA_WS_URL: 'https://x' })).toThrow(/ALPACA_WS_URL.*ws:\/\/ or wss:\/\/ URL/);
    const dir = mkdtempSync(join(tmpdir(), 'cw-alpaca-'));
    writeFileSync(join(dir, 'key'), 'AK-file\n');
    writeFileSync(join(dir, 'secret'), ' sec-file \n');
    const files = loadConfig({
      FEED: 'alpaca',
      ALPACA_API_KEY_FILE: join(dir, 'key'),
      ALPACA_API_SECRET_FILE: join(dir, 'secret'),
      SYMBOLS: 'AAPL',
    });
    expect([files.alpacaApiKey, files.alpacaApiSecret, files.mode]).toEqual(['AK-file', 'sec-file', 'live']);
  });
  it('MODE=live without the key or the secret is an error naming what is missing, never the secret', () => {
    expect(() => loadConfig({ FEED: 'alpaca', MODE: 'live', SYMBOLS: 'AAPL' })).toThrow(
      /MODE=live with FEED=alpaca needs ALPACA_API_KEY and ALPACA_API_SECRET .*ALPACA_API_KEY and ALPACA_API_SECRET not set/,
    );
    let msg = '';
    try {
      loadConfig({ FEED: 'alpaca', MODE: 'live', ALPACA_API_KEY: 'AK-visible-9', SYMBOLS: 'AAPL' });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/ALPACA_API_SECRET not set/);
    expect(msg).not.toContain('AK-visible-9');
  });
});
