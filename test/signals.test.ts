import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { CLI, ROOT, alive, cmdline, descendants, csvOutputs, readCsv, runCli, tempDir, uniquePrefix, waitFor } from './helpers.js';
import { startNode } from './redis-nodes.js';
import { csvPath } from '@candlewick/common';
import { freePort } from '@candlewick/cli';

/**
 * Stopping a stack as users do: Ctrl-C in a terminal (SIGINT to the whole process group), SIGTERM,
 * `timeout`, a closed pipe. Every role takes its graceful path once, Redis stops last, nothing is
 * left running, and the exit code says what happened.
 */
function startGroup(args: string[], env: Record<string, string>, how: 'cli' | 'shell' | 'npm' | 'npx' = 'cli') {
  // a process group of its own, as a terminal gives a foreground job
  const opts = {
    cwd: ROOT,
    // (npm reads its configuration under HOME)
    env: {
      PATH: process.env.PATH ?? '',
      ...(how === 'npm' || how === 'npx' ? { HOME: process.env.HOME ?? '' } : {}),
      LOG_LEVEL: 'info',
      HTTP_PORT: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'],
    detached: true,
  };
  const proc =
    how === 'shell'
      ? spawn('bash', ['-c', args.join(' ')], opts)
      : how === 'npm'
        ? spawn('npm', args, opts)
        : how === 'npx'
          ? spawn('npx', ['candlewick', ...args], opts)
          : spawn(process.execPath, [CLI, ...args], opts);
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code, sig) => r(code ?? (sig ? -1 : null))));
  onTestFinished(() => {
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });
  return { proc, output: () => out, exited };
}

/** A stack replaying the bundled tape slowly enough to be stopped in the middle. */
const paced = (dir: string) => ({ DATA_DIR: dir, REPLAY_SPEED: '20000', REPLAY_SHIFT: 'false' });

async function runningStack(dir: string, extra: Record<string, string> = {}) {
  const s = startGroup(['stack'], { ...paced(dir), ...extra });
  await waitFor(() => /replaying tape/.test(s.output()), 60_000, 'the replay to start');
  await waitFor(
    () => {
      try {
        return readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows.length > 50;
      } catch {
        return false;
      }
    },
    60_000,
    'bars in the CSV',
  );
  const stackPid = s.proc.pid!;
  const procs = descendants(stackPid);
  expect(procs.some((p) => /redis-server/.test(cmdline(p)))).toBe(true);
  expect(procs.filter((p) => /cli\.js (write|close|aggregate|ingest|replay-server)/.test(cmdline(p)))).toHaveLength(5);
  return { ...s, procs };
}

/** What every graceful stop has in common. */
function expectCleanStop(out: string, procs: number[]): void {
  for (const role of ['ingest', 'replay-server', 'aggregate', 'close', 'write']) {
    // each role stopped once, through its own path, on the stack's SIGTERM
    expect(out.match(new RegExp(`\\d ${role.replace('-', '\\-')}\\s+INFO  stopping  signal=SIGTERM`, 'g')), role).toHaveLength(1);
  }
  expect(out).not.toMatch(/exited unexpectedly|second signal|lost the connection to Redis|ECONNREFUSED|uncaught|unhandled/);
  for (const p of procs) expect(alive(p), cmdline(p)).toBe(false);
  // rows whole: every line of every file is a row
  const rows = readCsv(csvPath(out.match(/dir=(\S+)\/redis/)![1]!, '1min', 'BINANCE:XRPETH')).rows;
  expect(rows.every((r) => Number.isFinite(r.start) && Number.isFinite(r.n))).toBe(true);
  expect(new Set(rows.map((r) => r.start)).size).toBe(rows.length);
}

/**
 * A stack kept running (EXIT_WHEN_IDLE_MS=0) on the bundled tape, Ctrl-C'd (SIGINT to its group, as
 * a terminal does) once the tape is done: the final close, every bar written, the summary, exit 0.
 */
async function ctrlCOnceTapeDone(s: ReturnType<typeof startGroup>, dir: string): Promise<void> {
  await waitFor(() => /tape finished/.test(s.output()), 60_000, 'the end of the tape');
  // the aggregators and the closer have caught up with the watermark: all that is left are the open bars
  await waitFor(
    () => {
      try {
        return readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows.length >= 2468;
      } catch {
        return false;
      }
    },
    60_000,
    'the bars the watermark closes',
  );
  const procs = descendants(s.proc.pid!);
  process.kill(-s.proc.pid!, 'SIGINT');
  expect(await s.exited).toBe(0);
  expect(s.output()).toMatch(/closing the remaining bars/);
  expect(s.output()).toMatch(/candlewick summary[\s\S]*bars written {5}1min=2469 5min=706 15min=238 30min=119 1h=60/);
  expectCleanStop(s.output(), procs);
}

describe('stopping a stack', () => {
  it('Ctrl-C in a terminal (SIGINT to the whole group): roles stop in order, each once, Redis last, exit 130', async () => {
    const dir = tempDir('ctrl-c');
    // (REPLAY_PROGRESS_MS=0: the paced replay says where it is at each 1 % of the tape, not at most every 10 s)
    const s = await runningStack(dir, { REPLAY_PROGRESS_MS: '0' });
    process.kill(-s.proc.pid!, 'SIGINT');
    expect(await s.exited).toBe(130);
    expect(s.output()).toMatch(/stopping every role in order/);
    // (50 closed 1-minute bars are past 1 % of the day's tape)
    expect(s.output()).toMatch(/replay-server\s+INFO  replayed 1% of the tape  session=1 sent=\d+ tapeTime=2019-10-11T/);
    expectCleanStop(s.output(), s.procs);
  });

  it('SIGTERM: the same graceful path, exit 143', async () => {
    const dir = tempDir('sigterm');
    const s = await runningStack(dir);
    s.proc.kill('SIGTERM');
    expect(await s.exited).toBe(143);
    expectCleanStop(s.output(), s.procs);
  });

  it('a closed pipe (npm start | head): stops the same way, exit 141, nothing left running', async () => {
    const dir = tempDir('sigpipe');
    const s = startGroup([`"${process.execPath}" "${CLI}" stack | head -3; echo "stack-exit=\${PIPESTATUS[0]}"`], paced(dir), 'shell');
    expect(await s.exited).toBe(0);
    expect(s.output()).toMatch(/stack-exit=141/);
    const log = readdirSync(join(dir, 'logs'))
      .filter((f) => f.startsWith('stack.'))
      .map((f) => readFileSync(join(dir, 'logs', f), 'utf8'))
      .join('');
    expect(log).toMatch(/stdout closed; stopping every role in order/);
    // every process that logged (the roles, the stack) is gone, and so is the private redis-server
    const pids = new Set([
      ...readdirSync(join(dir, 'logs')).flatMap((f) =>
        [...readFileSync(join(dir, 'logs', f), 'utf8').matchAll(/"pid":(\d+)/g)].map((m) => Number(m[1])),
      ),
    ]);
    expect(pids.size).toBeGreaterThanOrEqual(2);
    for (const p of pids) expect(alive(p)).toBe(false);
    expect(alive(Number(readFileSync(join(dir, 'redis', 'candlewick-redis.pid'), 'utf8')))).toBe(false);
  });

  it('`timeout` (SIGTERM to its group): nothing left running', async () => {
    const dir = tempDir('timeout');
    const s = startGroup([`timeout -s TERM 6 "${process.execPath}" "${CLI}" stack`], { ...paced(dir), REPLAY_SPEED: '2000' }, 'shell');
    await waitFor(() => /replaying tape/.test(s.output()), 60_000, 'the replay to start');
    const procs = descendants(s.proc.pid!);
    expect(await s.exited).toBe(124); // timeout's own code for "timed out"
    await waitFor(() => procs.every((p) => !alive(p)), 30_000, 'every process gone');
    expect(s.output()).toMatch(/stopping every role in order/);
    expect(s.output()).not.toMatch(/exited unexpectedly|ECONNREFUSED/);
  });

  it('Ctrl-C on a kept-running replay whose tape is done: the final close, every bar written, the summary, exit 0', async () => {
    const ref = tempDir('ctrl-c-done-ref');
    // (the run that ends by itself also has its HTTP_PORT taken: the page is left off, said once,
    // and the pipeline runs on, as docs/api.md says)
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    onTestFinished(() => void busy.close());
    const httpPort = (busy.address() as AddressInfo).port;
    const byItself = await runCli(['stack'], { DATA_DIR: ref, EXIT_WHEN_IDLE_MS: '500', HTTP_PORT: String(httpPort) });
    expect(byItself.code).toBe(0);
    expect(byItself.stdout.match(new RegExp(`port ${httpPort} is in use on 127\\.0\\.0\\.1 \\(HTTP_PORT=${httpPort}`, 'g'))).toHaveLength(
      1,
    );
    expect(byItself.stdout).toMatch(/serve did not start \(see above\); the pipeline runs on without it/);
    const dir = tempDir('ctrl-c-done');
    await ctrlCOnceTapeDone(startGroup(['stack'], { DATA_DIR: dir, EXIT_WHEN_IDLE_MS: '0' }), dir);
    expect(csvOutputs(dir)).toEqual(csvOutputs(ref));
  });

  it('the same under `npm start` (npm forwards the Ctrl-C the stack also had): exit 0, the summary, all 3,592 bars', async () => {
    const dir = tempDir('ctrl-c-done-npm');
    await ctrlCOnceTapeDone(startGroup(['start'], { DATA_DIR: dir, EXIT_WHEN_IDLE_MS: '0' }, 'npm'), dir);
    const rows = [...csvOutputs(dir).values()].reduce((n, text) => n + text.trimEnd().split('\n').length - 1, 0);
    expect(rows).toBe(3592);
  });

  it("`npx candlewick <role>` stopped with Ctrl-C exits with the role's code (0), not as killed by the signal", async () => {
    // npm runs `candlewick` through its script shell; the project's .npmrc makes that bash, which
    // runs the CLI in its own place (sh would die of the same Ctrl-C after the CLI exited 0, and npm
    // would then exit as killed by SIGINT: 130). The role has the Ctrl-C twice, from the terminal and
    // from npm: one request.
    const s = startGroup(['provider-server'], { REPLAY_PORT: String(await freePort()), LOG_FILE: 'false' }, 'npx');
    await waitFor(() => /serving the tape/.test(s.output()), 30_000, 'the provider stand-in');
    const [cli] = descendants(s.proc.pid!).filter((p) => /candlewick provider-server/.test(cmdline(p)));
    expect(cli).toBeDefined();
    process.kill(-s.proc.pid!, 'SIGINT');
    process.kill(cli!, 'SIGINT');
    expect(await s.exited).toBe(0);
    expect(s.output().match(/"msg":"stopping"/g)).toHaveLength(1);
    expect(s.output()).not.toMatch(/second signal/);
  });

  it('a Ctrl-C delivered twice at once (npm start forwards the SIGINT the stack also had) is one request, not a forced stop', async () => {
    const dir = tempDir('ctrl-c-twice');
    const s = await runningStack(dir);
    process.kill(-s.proc.pid!, 'SIGINT');
    process.kill(s.proc.pid!, 'SIGINT');
    expect(await s.exited).toBe(130);
    expectCleanStop(s.output(), s.procs);
  });

  it('a signal during the final close is not ignored: the stack stops at once, says so, exit 130', async () => {
    const dir = tempDir('final-close');
    const s = startGroup(['stack'], { DATA_DIR: dir, EXIT_WHEN_IDLE_MS: '500' });
    // (once the ingestor runs: the stack starts it only when every other role has said it is ready,
    // and a writer stopped between its log line and that word would hold the whole start)
    await waitFor(() => /trades flowing into Redis/.test(s.output()), 60_000, 'the ingestor');
    const writer = descendants(s.proc.pid!).find((p) => /cli\.js write/.test(cmdline(p)))!;
    // (a role runs in a process group of its own: a failed test must not leave it stopped behind)
    onTestFinished(() => {
      try {
        process.kill(writer, 'SIGKILL');
      } catch {
        // gone
      }
    });
    // a writer that takes no jobs keeps the final close waiting for it
    process.kill(writer, 'SIGSTOP');
    await waitFor(() => /closing the remaining bars/.test(s.output()), 60_000, 'the final close');
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    process.kill(-s.proc.pid!, 'SIGINT');
    process.kill(writer, 'SIGCONT');
    expect(await s.exited).toBe(130);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(s.output()).toMatch(/stopped during the final close/);
    expect(alive(writer)).toBe(false);
  });
  it('a second signal while the final close waits on a Redis that is gone: every role killed, none restarted, the stack gone at once', async () => {
    const dir = tempDir('gone-redis');
    const redis = await startNode(join(dir, 'redis'), [], {});
    onTestFinished(() => redis.kill('SIGKILL'));
    const s = startGroup(['stack'], {
      DATA_DIR: join(dir, 'data'),
      REDIS_URL: `redis://127.0.0.1:${redis.port}`,
      KEY_PREFIX: uniquePrefix('gone'),
      EXIT_WHEN_IDLE_MS: '0',
    });
    await waitFor(() => /tape finished/.test(s.output()), 60_000, 'the end of the tape');
    const procs = descendants(s.proc.pid!);
    expect(procs.filter((p) => /cli\.js (write|close|aggregate|ingest|replay-server)/.test(cmdline(p)))).toHaveLength(5);
    // Redis gone for good: the final close a Ctrl-C asks for waits for it ...
    await redis.kill('SIGKILL');
    process.kill(s.proc.pid!, 'SIGINT');
    await waitFor(() => /closing the remaining bars before stopping/.test(s.output()), 20_000, 'the final close');
    await new Promise((r) => setTimeout(r, 1000));
    // ... and a second one stops it at once
    const t0 = Date.now();
    process.kill(s.proc.pid!, 'SIGINT');
    expect(await Promise.race([s.exited, new Promise((r) => setTimeout(() => r('still running'), 15_000))])).toBe(130);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(s.output()).toMatch(/second signal: killing every role now/);
    expect(s.output()).not.toMatch(/exited unexpectedly|restarting it/);
    await waitFor(() => procs.every((p) => !alive(p)), 10_000, 'every role gone');
  });
});
