import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { connectRedis, loadConfig, makeKeys, parseBarsJob } from '@candlewick/common';
import { encodeBarState, barFromTrade, orderKey } from '@candlewick/core';
import { WriterService } from '@candlewick/writer';
const server = spawn('redis-server', ['--port', '7393', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 300));
const redis = connectRedis('redis://127.0.0.1:7393');
const dir = mkdtempSync(join(tmpdir(), 'wb-'));
const cfg = loadConfig({ DATA_DIR: dir, INTERVALS: '1min', KEY_PREFIX: 'wb' });
const w = new WriterService(redis, cfg, makeKeys('wb'), pino({ level: 'silent' }));
const N = 8000;
const T = Date.parse('2024-03-04T15:00:00Z');
const state = (i: number, m: number) => encodeBarState(barFromTrade(String(100 + (i % 100) / 100), 10 + m, orderKey(T + m * 60000 + i, `1-${i}`)));
for (let m = 0; m < 30; m++) {
  const t0 = performance.now();
  for (let j = 0; j < N; j += 1000) {
    const bars = [];
    for (let i = j; i < j + 1000; i++) bars.push({ interval: '1min', symbol: `W${String(i).padStart(5, '0')}`, start: T + m * 60000, state: state(i, m), rev: 0 });
    await w.processBatch(parseBarsJob({ bars }));
  }
  console.log(`minute ${m}: ${(performance.now() - t0).toFixed(0)} ms for ${N} bars`);
}
await redis.quit(); server.kill();
