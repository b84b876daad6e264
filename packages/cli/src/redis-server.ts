import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { RedisUnavailableError, sleep } from '@candlewick/common';

/**
 * The URL of the private redis-server a running `candlewick stack` keeps under `dataDir/redis`,
 * when there is one (its pid alive and a redis-server): a role started by hand beside the stack
 * (`candlewick tap bars:1min`) finds it without REDIS_URL.
 */
export function stackRedisUrl(dataDir: string): string | undefined {
  try {
    const dir = join(dataDir, 'redis');
    const pid = Number(readFileSync(join(dir, 'candlewick-redis.pid'), 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0 || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server')) return undefined;
    return readFileSync(join(dir, 'candlewick-redis.url'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** No Redis to use: the stack names the three ways out. */
export function noRedisServer(bin: string): RedisUnavailableError {
  return new RedisUnavailableError(
    `no Redis to use: REDIS_URL is not set and "${bin}" was not found on PATH. Either\n` +
      `  1. install Redis (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis), or\n` +
      `  2. point REDIS_URL at a Redis 7 you run (e.g. REDIS_URL=redis://127.0.0.1:6379), or\n` +
      `  3. run the containers instead: docker compose up`,
  );
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

/**
 * A private redis-server on a free loopback port, its data (AOF on) in `dir`. It runs in a process
 * group of its own, so a Ctrl-C in the terminal reaches only the stack, which stops it last.
 */
export class PrivateRedis {
  private proc: ChildProcess | undefined;
  private stopping = false;
  /** the server's last lines of output (warnings and up), to say why it died */
  readonly lastLines: string[] = [];
  port = 0;
  /** called when the server exits without being asked to */
  onUnexpectedExit: ((how: string) => void) | undefined;

  constructor(
    private readonly dir: string,
    private readonly bin = 'redis-server',
    private readonly appendonly = true,
    private readonly extraArgs: readonly string[] = [],
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private get pidFile(): string {
    return join(this.dir, 'candlewick-redis.pid');
  }

  /**
   * A server left running on this folder by a stack that was killed outright would share its AOF
   * with the new one: stop it first.
   */
  private async stopLeftover(): Promise<void> {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidFile, 'utf8').trim());
      if (!Number.isInteger(pid) || pid <= 0 || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server')) return;
    } catch {
      return;
    }
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 200; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        return;
      }
      await sleep(25);
    }
  }

  /**
   * Starts the server (on `port`, or a free one) and resolves with its URL once it answers. A server
   * that cannot start is a RedisUnavailableError saying why, in its own words (a full disk, a
   * folder it may not write), with nothing left running.
   */
  async start(port?: number): Promise<string> {
    try {
      return await this.startOnce(port);
    } catch (err) {
      if (err instanceof RedisUnavailableError) throw err;
      this.stopping = true;
      this.proc?.kill('SIGKILL');
      const said = this.lastLines
        .filter((l) => !/overcommit|WARNING/i.test(l))
        .slice(-3)
        .join(' | ');
      throw new RedisUnavailableError(
        `cannot start a private redis-server in ${resolve(this.dir)}: ${(err as Error).message}${said ? ` (redis-server said: ${said})` : ''}. ` +
          'Check the space and permissions of DATA_DIR, or point REDIS_URL at a Redis you run',
        { cause: err },
      );
    }
  }

  private async startOnce(port?: number): Promise<string> {
    mkdirSync(this.dir, { recursive: true });
    await this.stopLeftover();
    this.port = port ?? (await freePort());
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--dir',
      resolve(this.dir),
      '--save',
      '',
      '--appendonly',
      this.appendonly ? 'yes' : 'no',
      '--appendfsync',
      'everysec',
      '--daemonize',
      'no',
      '--logfile',
      '',
      '--loglevel',
      'warning',
      ...this.extraArgs,
    ];
    const proc = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.proc = proc;
    this.stopping = false;
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        this.lastLines.push(line);
        if (this.lastLines.length > 20) this.lastLines.shift();
      });
    }
    proc.once('exit', (code, signal) => {
      if (!this.stopping) this.onUnexpectedExit?.(signal ? `killed by ${signal}` : `exited with code ${code}`);
    });
    const spawned = await new Promise<Error | undefined>((res) => {
      proc.once('spawn', () => res(undefined));
      proc.once('error', (err) => res(err));
    });
    if (spawned) {
      if ((spawned as NodeJS.ErrnoException).code === 'ENOENT') throw noRedisServer(this.bin);
      throw spawned;
    }
    writeFileSync(this.pidFile, String(proc.pid));
    // for roles started by hand beside the stack (`candlewick tap`): where its Redis is
    writeFileSync(join(this.dir, 'candlewick-redis.url'), this.url);
    const probe = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined); // refused until the server listens; the loop below retries
    try {
      for (let i = 0; i < 200; i++) {
        if (proc.exitCode !== null) throw new Error(`redis-server exited with code ${proc.exitCode}`);
        try {
          await probe.connect();
          await probe.ping();
          return this.url;
        } catch {
          probe.disconnect();
          await sleep(25);
        }
      }
      throw new Error('redis-server did not start within 5 s');
    } finally {
      probe.disconnect();
    }
  }

  /** Whether the server process is running. */
  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((res) => proc.once('exit', () => res()));
    proc.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await Promise.race([exited, sleep(2000)]);
    }
  }

  kill(): void {
    this.proc?.kill('SIGKILL');
  }
}

/**
 * A private Redis Cluster of `masters` redis-server processes (and `replicas` per master: a replica
 * takes over when its master dies, after `nodeTimeoutMs`) on free loopback ports,
 * each with its data (AOF on) and its nodes.conf under `dir/node-i`. Started again on the same
 * folder it reuses the ports it chose (kept in `dir/cluster.json`) so the nodes find each other
 * from their nodes.conf; a new folder gets a new cluster through `redis-cli --cluster create`.
 */
export class PrivateRedisCluster {
  private nodes: PrivateRedis[] = [];

  constructor(
    private readonly dir: string,
    private readonly bin = 'redis-server',
    private readonly masters = 3,
    private readonly opts: { replicas?: number; nodeTimeoutMs?: number } = {},
  ) {}

  private get count(): number {
    return this.masters * (1 + (this.opts.replicas ?? 0));
  }

  /** Comma-separated node URLs: REDIS_URL for REDIS_CLUSTER=on. */
  get url(): string {
    return this.nodes.map((n) => n.url).join(',');
  }

  async start(): Promise<string> {
    mkdirSync(this.dir, { recursive: true });
    const state = join(this.dir, 'cluster.json');
    let ports: number[] | undefined;
    try {
      const saved = JSON.parse(readFileSync(state, 'utf8')) as { ports?: unknown };
      if (
        Array.isArray(saved.ports) &&
        saved.ports.length === this.count &&
        saved.ports.every((p, i) => Number.isInteger(p) && existsSync(join(this.dir, `node-${i}`, 'nodes.conf')))
      ) {
        ports = saved.ports as number[];
      }
    } catch {
      // no cluster here yet
    }
    const fresh = ports === undefined;
    this.nodes = Array.from(
      { length: this.count },
      (_, i) =>
        new PrivateRedis(join(this.dir, `node-${i}`), this.bin, true, [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          String(this.opts.nodeTimeoutMs ?? 2000),
        ]),
    );
    try {
      for (let i = 0; i < this.count; i++) await this.nodes[i]!.start(ports?.[i]);
      if (fresh) {
        writeFileSync(state, JSON.stringify({ ports: this.nodes.map((n) => n.port) }));
        const cli = this.bin.endsWith('redis-server') ? `${this.bin.slice(0, -'redis-server'.length)}redis-cli` : 'redis-cli';
        await promisify(execFile)(
          cli,
          [
            '--cluster',
            'create',
            ...this.nodes.map((n) => `127.0.0.1:${n.port}`),
            '--cluster-replicas',
            String(this.opts.replicas ?? 0),
            '--cluster-yes',
          ],
          { timeout: 30_000 },
        );
      }
      await this.waitUntilOk();
    } catch (err) {
      await this.stop();
      throw err;
    }
    return this.url;
  }

  /** Every node reports cluster_state:ok (slots all assigned and agreed). */
  private async waitUntilOk(): Promise<void> {
    const until = Date.now() + 30_000;
    for (const node of this.nodes) {
      const probe = new Redis(node.url, { maxRetriesPerRequest: 0, retryStrategy: () => 100 });
      probe.on('error', () => undefined);
      try {
        for (;;) {
          const info = String(await probe.call('CLUSTER', 'INFO').catch(() => ''));
          if (/cluster_state:ok/.test(info)) break;
          if (Date.now() > until) throw new Error(`redis cluster node ${node.port} did not reach cluster_state:ok within 30 s`);
          await sleep(50);
        }
      } finally {
        probe.disconnect();
      }
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }

  kill(): void {
    for (const n of this.nodes) n.kill();
  }

  /** The nodes, for a supervisor that restarts one that dies. */
  get servers(): readonly PrivateRedis[] {
    return this.nodes;
  }
}
