import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { RedisUnavailableError, sleep } from '@candlewick/common';

/** The files a stack keeps beside its private redis-server's data, under `dir` (DATA_DIR/redis). */
export function privateRedisFiles(dir: string): { pid: string; url: string; password: string; conf: string } {
  return {
    pid: join(dir, 'candlewick-redis.pid'),
    url: join(dir, 'candlewick-redis.url'),
    password: join(dir, 'candlewick-redis.pass'),
    conf: join(dir, 'candlewick-redis.conf'),
  };
}

/**
 * Whether process `pid` is the redis-server candlewick started on `dir` and `port`: a redis-server
 * (its title "redis-server 127.0.0.1:port" carries the port) whose working directory is `dir` (it
 * runs with --dir there). A pid file alone proves nothing: the pid may since name another
 * project's server, which must never be stopped or used.
 */
export function isOurRedis(pid: number, dir: string, port: number | undefined): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    if (!title.includes('redis-server')) return false;
    if (port === undefined || !new RegExp(`:${port}\\b`).test(title)) return false;
    return realpathSync(readlinkSync(`/proc/${pid}/cwd`)) === realpathSync(resolve(dir));
  } catch {
    return false;
  }
}

function portOf(url: string): number | undefined {
  try {
    const port = Number(new URL(url).port);
    return Number.isInteger(port) && port > 0 ? port : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The private redis-server a running `candlewick stack` keeps under `dataDir/redis`, for a role
 * started by hand beside it (`candlewick tap bars:1min`) without REDIS_URL: its URL and password.
 * `stale` when the stack's address file is there but its server is not (the stack stopped): the
 * caller says so rather than trying some other Redis. Undefined when no stack ever ran here.
 */
export function stackRedis(dataDir: string): { url: string; password: string | undefined } | { stale: string } | undefined {
  const dir = join(dataDir, 'redis');
  const files = privateRedisFiles(dir);
  let url: string;
  try {
    url = readFileSync(files.url, 'utf8').trim();
  } catch {
    return undefined;
  }
  if (!url) return undefined;
  let pid = NaN;
  try {
    pid = Number(readFileSync(files.pid, 'utf8').trim());
  } catch {
    // no pid file: not running
  }
  if (!isOurRedis(pid, dir, portOf(url)))
    return {
      stale:
        `the stack on DATA_DIR ${resolve(dataDir)} is not running: its address file ${resolve(files.url)} is stale ` +
        `(no redis-server of that stack runs). Start the stack (npm start), or set REDIS_URL to the Redis to use`,
    };
  let password: string | undefined;
  try {
    password = readFileSync(files.password, 'utf8').trim() || undefined;
  } catch {
    password = undefined;
  }
  return { url, password };
}

function writeIfChanged(path: string, text: string): void {
  try {
    if (readFileSync(path, 'utf8') === text) return;
  } catch {
    // not there yet
  }
  writeFileSync(path, text, { mode: 0o600 });
}

/** A password for a stack's private redis-server: 32 random bytes, hex. */
export function generatePassword(): string {
  return randomBytes(32).toString('hex');
}

/**
 * `dir` and everything in it its owner's alone: the folder 0700, files 0600, sub-folders 0700 —
 * also what an earlier version left readable (a stack before passwords wrote its AOF 0644).
 */
function ownerOnly(dir: string): void {
  chmodSync(dir, 0o700);
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path);
    if (st.isDirectory()) ownerOnly(path);
    else if (st.isFile()) chmodSync(path, 0o600);
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

/** A free port whose cluster bus port (+ 10000) is free too, for a Redis Cluster node. */
export async function freeClusterPort(): Promise<number> {
  for (let i = 0; ; i++) {
    const port = await freePort();
    if (port + 10000 <= 65535 && (await portFree(port + 10000))) return port;
    if (i >= 50) throw new Error('no free port with a free cluster bus port (port + 10000) found in 50 tries');
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
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
 *
 * With `password` (the stack's: see `generatePassword`) the server requires it, and its folder and
 * files are its owner's alone (folder 0700, files 0600, the server under umask 077): the trades and
 * bars in the AOF are nobody else's to read or change. The password goes in a config file of mode
 * 0600, never on the command line, where any local user could read it.
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
    private readonly password?: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private get pidFile(): string {
    return privateRedisFiles(this.dir).pid;
  }

  /**
   * A server left running on this folder by a stack that was killed outright would share its AOF
   * with the new one: stop it first.
   */
  private async stopLeftover(): Promise<void> {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidFile, 'utf8').trim());
      // only the server this folder's stack started (its port, this folder): never whatever now has that pid
      const port = portOf(readFileSync(privateRedisFiles(this.dir).url, 'utf8').trim());
      if (!isOurRedis(pid, this.dir, port)) return;
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
   * A port found free can be taken by another process before the server listens on it (its cluster
   * bus port, port + 10000, too): on a free port of our choosing, a server that could not listen is
   * started again on another, up to three times.
   */
  private async startOnceOrAgain(port: number | undefined): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startOnce(port);
      } catch (err) {
        const taken = this.lastLines.some((l) => /Failed listening on port|Address already in use/.test(l));
        if (port !== undefined || !taken || attempt >= 3 || err instanceof RedisUnavailableError) throw err;
        this.stopping = true;
        this.proc?.kill('SIGKILL');
        this.stopping = false;
        this.lastLines.length = 0;
      }
    }
  }

  /**
   * Starts the server (on `port`, or a free one) and resolves with its URL once it answers. A server
   * that cannot start is a RedisUnavailableError saying why, in its own words (a full disk, a
   * folder it may not write), with nothing left running.
   */
  async start(port?: number): Promise<string> {
    try {
      return await this.startOnceOrAgain(port);
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
    const conf: string[] = [];
    if (this.password !== undefined) {
      ownerOnly(this.dir);
      const files = privateRedisFiles(this.dir);
      // (written only when changed: a restart after Redis died of a full disk must not need space)
      writeIfChanged(files.password, `${this.password}\n`);
      writeIfChanged(files.conf, `requirepass ${this.password}\n`);
      conf.push(files.conf);
    }
    // a cluster node listens on port + 10000 too (its bus): both must be free
    this.port = port ?? (this.extraArgs.includes('--cluster-enabled') ? await freeClusterPort() : await freePort());
    const args = [
      ...conf,
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
    // the server creates its AOF files under this process's umask: its owner's alone with a password
    const umask = this.password !== undefined ? process.umask(0o077) : undefined;
    let proc: ChildProcess;
    try {
      proc = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } finally {
      if (umask !== undefined) process.umask(umask);
    }
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
    const mode = this.password !== undefined ? 0o600 : 0o644;
    writeFileSync(this.pidFile, String(proc.pid), { mode });
    // for roles started by hand beside the stack (`candlewick tap`): where its Redis is
    writeFileSync(privateRedisFiles(this.dir).url, this.url, { mode });
    const probe = new Redis(this.url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      ...(this.password !== undefined ? { password: this.password } : {}),
    });
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

  /** Every node reports cluster_state:ok (slots all assigned and agreed), every replica its link to its master up. */
  private async waitUntilOk(): Promise<void> {
    const until = Date.now() + 30_000;
    for (const node of this.nodes) {
      const probe = new Redis(node.url, { maxRetriesPerRequest: 0, retryStrategy: () => 100 });
      probe.on('error', () => undefined);
      try {
        for (;;) {
          const info = String(await probe.call('CLUSTER', 'INFO').catch(() => ''));
          // a replica counts once it has its master's data: one still in its first sync cannot take over
          const repl = await probe.info('replication').catch(() => '');
          if (/cluster_state:ok/.test(info) && (!/role:slave/.test(repl) || /master_link_status:up/.test(repl))) break;
          if (Date.now() > until)
            throw new Error(
              `redis cluster node ${node.port} did not reach cluster_state:ok (and, a replica, its master's data) within 30 s`,
            );
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
