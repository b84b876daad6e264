import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers.js';

/**
 * The Docker side of the tests: which client and compose tool to use, whether an engine answers,
 * and the base images (real ones, or local stand-ins where Docker Hub is out of reach).
 */

/** The Docker client (DOCKER=/usr/bin/docker picks one when several are installed). */
export const DOCKER = process.env.DOCKER || 'docker';

/** In CI a missing engine is a failure, not a skip. */
export const DOCKER_REQUIRED = process.env.CANDLEWICK_REQUIRE_DOCKER === '1';

function run(cmd: string, args: string[], timeout = 30_000): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout });
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? '';
}

/**
 * The compose tool: the v2 plugin (`docker compose`) where it exists, else Debian's v1
 * `docker-compose`; CANDLEWICK_COMPOSE="docker-compose" forces one.
 */
export function composeCommand(): string[] | undefined {
  const forced = process.env.CANDLEWICK_COMPOSE?.trim();
  const candidates = forced ? [forced.split(/\s+/)] : [[DOCKER, 'compose'], ['docker-compose']];
  return candidates.find(([cmd, ...args]) => run(cmd!, [...args, 'version']).status === 0);
}

/** Why Docker cannot be used here (no client, no engine, no compose tool), or undefined. */
export function dockerProblem(needCompose: boolean): string | undefined {
  const info = run(DOCKER, ['info', '--format', '{{.ServerVersion}}']);
  if (info.error) return `no Docker client (${DOCKER}: ${info.error.message})`;
  if (info.status !== 0) return `no Docker engine answers (${DOCKER} info: ${lastLine(info.stderr)})`;
  if (needCompose && !composeCommand()) return 'no compose tool: neither `docker compose` (v2) nor `docker-compose` (v1) runs';
  return undefined;
}

/** `docker …`, its trimmed stdout; throws with stderr on failure. */
export function docker(args: string[], timeout = 120_000): string {
  return execFileSync(DOCKER, args, { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** The same, for cleanup: never throws. */
export function dockerQuiet(args: string[]): string {
  const r = run(DOCKER, args, 120_000);
  return r.status === 0 ? r.stdout.trim() : '';
}

/**
 * Makes sure the engine has `images` (names from the Dockerfile and docker-compose.yml):
 * present, pulled, or built as local stand-ins by test/docker/base-images.sh. Returns its log.
 */
export function ensureBaseImages(images: string[]): string {
  const r = spawnSync('bash', [join(ROOT, 'test/docker/base-images.sh'), ...images], {
    encoding: 'utf8',
    timeout: 15 * 60_000,
    env: { ...process.env, DOCKER },
  });
  if (r.status !== 0) throw new Error(`test/docker/base-images.sh failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stderr}`);
  return r.stderr.trim();
}

/** Image ids the engine holds now, for removing only what a test made. */
export function imageIds(): Set<string> {
  return new Set(dockerQuiet(['images', '-a', '-q', '--no-trunc']).split('\n').filter(Boolean));
}

/** Removes the untagged images a build made since `before` (the legacy builder keeps build stages). */
export function removeNewDanglingImages(before: Set<string>): void {
  const dangling = dockerQuiet(['images', '-q', '--no-trunc', '--filter', 'dangling=true']).split('\n').filter(Boolean);
  for (const id of dangling) if (!before.has(id)) dockerQuiet(['rmi', id]);
}

/**
 * A replay line documented at the top of a compose file (docker-compose.yml, and in the README): the
 * variables set in front of `docker compose [-f …] --profile replay [--profile …] up`, the files it
 * names (none: docker-compose.yml alone), its profiles and its number of aggregators; the line whose
 * profiles are exactly `profiles`. The tests run exactly that line.
 */
export function replayLine(
  file = 'docker-compose.yml',
  profiles: string[] = ['replay'],
): { env: Record<string, string>; files: string[]; profiles: string[]; aggregators: number } {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const lines = [
    ...text.matchAll(/^#\s+((?:[A-Z_]+=\S+\s+)+)docker compose ((?:-f \S+ )*)((?:--profile \S+ )+)up\b.*--scale aggregator=(\d+)/gm),
  ];
  const want = [...profiles].sort().join(' ');
  const m = lines.find(
    (l) =>
      [...l[3]!.matchAll(/--profile (\S+)/g)]
        .map((p) => p[1]!)
        .sort()
        .join(' ') === want,
  );
  if (!m)
    throw new Error(
      `${file}: no replay line (VAR=… docker compose [-f …] ${profiles.map((p) => `--profile ${p}`).join(' ')} up … --scale aggregator=N) in its header`,
    );
  const env = Object.fromEntries(
    m[1]!
      .trim()
      .split(/\s+/)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  const files = [...m[2]!.matchAll(/-f (\S+)/g)].map((f) => f[1]!);
  return { env, files: files.length ? files : ['docker-compose.yml'], profiles: [...profiles], aggregators: Number(m[4]) };
}
