import { redactUrl, sleep, type Logger } from '@candlewick/common';

/** A provider answered with something backfill cannot use. `status` is the HTTP status (0: no answer). */
export class ProviderError extends Error {
  constructor(
    readonly provider: string,
    readonly status: number,
    message: string,
    /** true when asking again later cannot help (a refused key, a premium endpoint, a bad request) */
    readonly permanent: boolean,
    /** set when only this symbol is refused (a name the provider does not know): the others go on */
    readonly symbol?: string,
  ) {
    super(`${provider}: ${message}`);
    this.name = 'ProviderError';
  }
}

/**
 * A token bucket: `perMinute` requests a minute on average, bursts up to `burst`. take() waits for a
 * token; a 429 drains the bucket so every caller waits out Retry-After together.
 */
export class TokenBucket {
  private tokens: number;
  // monotonic: a step of the wall clock must neither stall the requests nor burst them
  private last = performance.now();
  private blockedUntil = 0;

  constructor(
    private readonly perMinute: number,
    private readonly burst = Math.max(1, Math.min(perMinute, 10)),
  ) {
    this.tokens = this.burst;
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perMinute) / 60_000);
    this.last = now;
  }

  async take(signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (signal?.aborted) throw new Error('stopped');
      const wait = this.blockedUntil - performance.now();
      if (wait > 0) {
        await sleep(wait, signal);
        continue;
      }
      this.refill();
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      await sleep(Math.ceil(((1 - this.tokens) * 60_000) / this.perMinute), signal);
    }
  }

  /** Nobody asks again before `ms` from now. */
  block(ms: number): void {
    this.blockedUntil = Math.max(this.blockedUntil, performance.now() + ms);
    this.tokens = 0;
  }
}

/** Retry-After as seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined;
  const secs = Number(header);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(header);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/**
 * X-RateLimit-Reset (Alpaca's, and others': the Unix time in seconds at which the window opens
 * again) as ms from now, at most `cap` (a clock that is off must not stall backfill for hours);
 * undefined when absent or unreadable.
 */
export function rateLimitResetMs(header: string | null, cap: number, now = Date.now()): number | undefined {
  if (header === null || !/^\d+(\.\d+)?$/.test(header.trim())) return undefined;
  const at = Number(header) * 1000;
  return Math.min(cap, Math.max(0, at - now));
}

export interface HttpOptions {
  provider: string;
  bucket: TokenBucket;
  /** attempts after the first for 429, 5xx and network errors */
  retries: number;
  /** headers sent with every request (credentials go here, never in the URL) */
  headers: Record<string, string>;
  log: Logger;
  /** first backoff step; doubles per attempt, with jitter */
  backoffMs?: number;
  /** wait this long on a 429 without Retry-After */
  defaultRetryAfterMs?: number;
  signal?: AbortSignal;
  /**
   * The provider's own reading of a refusal (a 4xx other than 429): its error codes turned into a
   * clear message; undefined leaves the general one.
   */
  refusal?: (status: number, body: string, retryAfter: string | null, where: string) => ProviderError | undefined;
}

/**
 * GET a JSON document with the provider's rate limit, retries with backoff for 5xx and network
 * errors, Retry-After for 429, and a ProviderError that says what went wrong for anything else.
 */
export async function getJson(url: string, o: HttpOptions): Promise<unknown> {
  const where = redactUrl(url);
  for (let attempt = 0; ; attempt++) {
    await o.bucket.take(o.signal);
    let res: Response;
    try {
      res = await fetch(url, { headers: { accept: 'application/json', ...o.headers }, signal: o.signal });
    } catch (err) {
      if (o.signal?.aborted) throw err;
      if (attempt >= o.retries) {
        throw new ProviderError(o.provider, 0, `no answer from ${where} after ${attempt + 1} attempts (${(err as Error).message})`, false);
      }
      await backoff(o, attempt, `no answer (${(err as Error).message})`, where);
      continue;
    }
    const cap = o.defaultRetryAfterMs ?? 60_000;
    if (res.ok) {
      // the window's last request: nobody asks again before it opens (X-RateLimit-Remaining: 0)
      if (res.headers.get('x-ratelimit-remaining')?.trim() === '0') {
        const wait = rateLimitResetMs(res.headers.get('x-ratelimit-reset'), cap);
        if (wait !== undefined && wait > 0) {
          o.log.info(
            { provider: o.provider, url: where, waitMs: wait },
            'the rate limit window is used up (X-RateLimit-Remaining: 0): waiting for X-RateLimit-Reset',
          );
          o.bucket.block(wait);
        }
      }
      const text = await res.text();
      try {
        return JSON.parse(text);
      } catch {
        throw new ProviderError(
          o.provider,
          res.status,
          `malformed body from ${where}: not JSON (starts ${JSON.stringify(text.slice(0, 60))})`,
          false,
        );
      }
    }
    const body = (await res.text().catch(() => '')).slice(0, 200);
    if (res.status === 429) {
      const wait = retryAfterMs(res.headers.get('retry-after')) ?? rateLimitResetMs(res.headers.get('x-ratelimit-reset'), cap) ?? cap;
      if (attempt >= o.retries)
        throw new ProviderError(o.provider, 429, `rate limited (HTTP 429) by ${where}, still after ${attempt + 1} attempts`, false);
      o.log.warn(
        { provider: o.provider, url: where, waitMs: wait },
        'rate limited (HTTP 429): waiting as Retry-After (or X-RateLimit-Reset) asks',
      );
      o.bucket.block(wait);
      continue;
    }
    if (res.status >= 500) {
      if (attempt >= o.retries)
        throw new ProviderError(o.provider, res.status, `HTTP ${res.status} from ${where} after ${attempt + 1} attempts: ${body}`, false);
      await backoff(o, attempt, `HTTP ${res.status}`, where);
      continue;
    }
    const own = o.refusal?.(res.status, body, res.headers.get('retry-after'), where);
    if (own) throw own;
    const hint =
      res.status === 401
        ? 'the API key was refused; check it'
        : res.status === 403
          ? 'the key has no access to this endpoint (it may need a paid plan)'
          : res.status === 404
            ? 'not found; check the symbol and the base URL'
            : 'the request was refused';
    throw new ProviderError(o.provider, res.status, `HTTP ${res.status} from ${where}: ${hint}${body ? ` (${body})` : ''}`, true);
  }
}

async function backoff(o: HttpOptions, attempt: number, why: string, where: string): Promise<void> {
  const ms = Math.min(30_000, (o.backoffMs ?? 500) * 2 ** attempt) * (0.5 + Math.random() / 2);
  o.log.warn({ provider: o.provider, url: where, attempt: attempt + 1, retryInMs: Math.round(ms) }, `${why}; retrying`);
  await sleep(ms, o.signal);
}
