import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir, uniquePrefix } from './helpers.js';
import { allLogs, expectTapeExact, makeCerts, startNode, type Node } from './redis-nodes.js';

/**
 * A real redis-server speaking only TLS (`--port 0 --tls-port`), asking clients for a certificate
 * and a password, with certificates made here by openssl; its own is for the name redis.internal
 * (as a deployment names its Redis), reached at 127.0.0.1: a stack runs the bundled tape over it
 * exact with REDIS_TLS_SERVERNAME; without it, or with a CA that did not sign Redis's certificate,
 * a role is refused at once, naming the setting.
 */
describe('rediss:// with a CA, a client certificate, a server name and a password', () => {
  const dir = tempDir('redis-tls');
  const serverName = 'redis.internal';
  const certs = makeCerts(join(dir, 'certs'), serverName);
  const password = `pw-${Date.now().toString(36)}-tls-secret`;
  const passwordFile = join(dir, 'redis-password');
  writeFileSync(passwordFile, password);
  let node: Node;

  beforeAll(async () => {
    node = await startNode(
      join(dir, 'redis'),
      [
        ...['--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.ca],
        ...['--tls-auth-clients', 'yes', '--requirepass', password],
      ],
      {
        password,
        tls: {
          ca: readFileSync(certs.ca),
          cert: readFileSync(certs.clientCert),
          key: readFileSync(certs.clientKey),
          servername: serverName,
        },
      },
    );
  });
  afterAll(async () => {
    await node?.kill();
  });

  const tlsEnv = () => ({
    REDIS_URL: `rediss://127.0.0.1:${node.port}`,
    REDIS_PASSWORD_FILE: passwordFile,
    REDIS_TLS_CA_FILE: certs.ca,
    REDIS_TLS_CERT_FILE: certs.clientCert,
    REDIS_TLS_KEY_FILE: certs.clientKey,
    REDIS_TLS_SERVERNAME: serverName,
  });

  it('a whole stack over TLS with client certificates: every bar exact, no key or password in any log', async () => {
    const dataDir = tempDir('redis-tls-run');
    const res = await runCli(
      ['stack'],
      { ...tlsEnv(), KEY_PREFIX: uniquePrefix('tls'), DATA_DIR: dataDir, EXIT_WHEN_IDLE_MS: '2000' },
      150_000,
    );
    expectTapeExact(res, dataDir);
    const logs = allLogs(res.stdout + res.stderr, dataDir);
    expect(logs).toMatch(/rediss:\/\/127\.0\.0\.1/);
    expect(logs).not.toContain(password);
    // no line of the private key (its base64 body) anywhere
    const keyLines = readFileSync(certs.clientKey, 'utf8')
      .split('\n')
      .filter((l) => l.length > 40 && !l.startsWith('-----'));
    for (const l of keyLines) expect(logs).not.toContain(l);
  }, 180_000);

  it("a CA that did not sign Redis's certificate: exit 3 at once, the message names REDIS_TLS_CA_FILE", async () => {
    const t0 = Date.now();
    const res = await runCli(
      ['aggregate'],
      {
        ...tlsEnv(),
        REDIS_TLS_CA_FILE: certs.otherCa,
        KEY_PREFIX: uniquePrefix('tls-bad'),
        DATA_DIR: tempDir('redis-tls-bad'),
        REDIS_CONNECT_TIMEOUT: '20s',
      },
      60_000,
    );
    expect(res.code, res.stdout + res.stderr).toBe(3);
    expect(res.stdout + res.stderr).toMatch(/TLS to Redis at rediss:\/\/127\.0\.0\.1:\d+.*REDIS_TLS_CA_FILE/);
    // refused, not waited out until REDIS_CONNECT_TIMEOUT
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(res.stdout + res.stderr).not.toContain(password);
  });

  it('a certificate for redis.internal reached at 127.0.0.1 without REDIS_TLS_SERVERNAME: exit 3 at once, the message names REDIS_TLS_SERVERNAME', async () => {
    const t0 = Date.now();
    const env: Record<string, string> = {
      ...tlsEnv(),
      KEY_PREFIX: uniquePrefix('tls-name'),
      DATA_DIR: tempDir('redis-tls-name'),
      REDIS_CONNECT_TIMEOUT: '20s',
    };
    delete env.REDIS_TLS_SERVERNAME;
    const res = await runCli(['aggregate'], env, 60_000);
    expect(res.code, res.stdout + res.stderr).toBe(3);
    expect(res.stdout + res.stderr).toMatch(
      /TLS to Redis at rediss:\/\/127\.0\.0\.1:\d+ failed: Hostname\/IP does not match.*REDIS_TLS_SERVERNAME/,
    );
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(res.stdout + res.stderr).not.toContain(password);
  });

  it('without the client certificate Redis (tls-auth-clients yes) refuses the handshake: exit 3 naming the certificate settings', async () => {
    const env: Record<string, string> = {
      ...tlsEnv(),
      KEY_PREFIX: uniquePrefix('tls-nocert'),
      DATA_DIR: tempDir('redis-tls-nocert'),
      REDIS_CONNECT_TIMEOUT: '5s',
    };
    delete env.REDIS_TLS_CERT_FILE;
    delete env.REDIS_TLS_KEY_FILE;
    const res = await runCli(['aggregate'], env, 60_000);
    expect(res.code, res.stdout + res.stderr).toBe(3);
    expect(res.stdout + res.stderr).toMatch(/REDIS_TLS_CERT_FILE/);
  });
});

/**
 * Redis with tls-auth-clients refuses a client without a certificate as often by resetting the
 * connection mid-handshake as by a TLS alert. A listener that resets every connection stands for
 * it here, every time: the timeout's message must still name the certificate settings.
 */
describe('rediss:// reset during the handshake, no client certificate set', () => {
  let server: Server;
  let port = 0;
  beforeAll(async () => {
    server = createServer((socket) => socket.resetAndDestroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('exit 3 after REDIS_CONNECT_TIMEOUT, the message naming REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE', async () => {
    const res = await runCli(
      ['aggregate'],
      {
        REDIS_URL: `rediss://127.0.0.1:${port}`,
        KEY_PREFIX: uniquePrefix('tls-reset'),
        DATA_DIR: tempDir('redis-tls-reset'),
        REDIS_CONNECT_TIMEOUT: '3s',
      },
      60_000,
    );
    expect(res.code, res.stdout + res.stderr).toBe(3);
    expect(res.stdout + res.stderr).toMatch(/reset during the TLS handshake.*REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE/);
  });
});
