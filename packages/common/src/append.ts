import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

/** An append planned by CsvFiles.plan: the file, its row(s), and its size and inode as the writer left them. */
export interface PlannedAppend {
  path: string;
  text: string;
  size: number;
  ino: number;
}

/** A file's size and inode after an append. */
export interface AppendDone {
  size: number;
  ino: number;
}

/** An append that failed (`cause`); `partialRow`: cutting the file back failed too, so part of the row may be there. */
export class AppendError extends Error {
  constructor(
    override readonly cause: unknown,
    readonly partialRow: boolean,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = 'AppendError';
  }
}

/**
 * For tests: called between an append's check and its write (someone cutting the file right then).
 * Never set outside tests.
 */
export const appendHooks: { betweenCheckAndWrite?: (path: string) => void } = {};

/**
 * The system calls of one append, whole or not at all: open, fstat, the check that the file is as
 * the writer left it (`size`, `ino`; 'changed', writing nothing, when not — or when it is gone),
 * write, fstat again, and on a failed write the file cut back to `size` before the error is thrown
 * (as an AppendError). A file cut by someone else between the check and the write got the row at
 * its new end, after the rows cut away: the second fstat sees it short, the row is taken out again
 * and the answer is 'changed' (the writer reads the file back, restores the rows cut, then appends
 * the row after them). Five system calls and no handle kept: 48,000 files of a whole market need no
 * more open files than one. Run by CsvFiles in its thread, and by the writer's append threads for
 * a job's rows planned with CsvFiles.plan.
 */
export function appendText(path: string, text: string, size: number, ino: number, check = true): AppendDone | 'changed' {
  let fd: number;
  try {
    // (read and write: a row that landed after a cut is read back to be taken out)
    fd = openSync(path, 'a+');
  } catch (err) {
    // its folder removed under the writer: the file is gone, which verify reports (rows missing)
    if (check && size !== 0 && (err as NodeJS.ErrnoException).code === 'ENOENT') return 'changed';
    throw new AppendError(err, false);
  }
  try {
    const before = fstatSync(fd);
    if (check && (before.size !== size || (ino !== 0 && before.ino !== ino))) return 'changed';
    appendHooks.betweenCheckAndWrite?.(path);
    const buf = Buffer.from(text);
    let off = 0;
    try {
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      // nothing of a failed row stays behind: the retry starts from a whole last row
      let partialRow = false;
      try {
        ftruncateSync(fd, size);
      } catch {
        partialRow = true;
      }
      throw new AppendError(err, partialRow);
    }
    if (check) {
      const after = fstatSync(fd).size;
      if (after < before.size + buf.length) {
        if (after >= buf.length) {
          const tail = Buffer.allocUnsafe(buf.length);
          if (readSync(fd, tail, 0, buf.length, after - buf.length) === buf.length && tail.equals(buf))
            ftruncateSync(fd, after - buf.length);
        }
        return 'changed';
      }
    }
    return { size: before.size + buf.length, ino: before.ino };
  } finally {
    closeSync(fd);
  }
}

/** What an append thread answers for one planned append: done, 'changed', or failed (that thread stops there). */
export type AppendReply = AppendDone | 'changed' | { error: string; code?: string; partialRow: boolean };

/** A message to an append thread: its rows' paths and texts in one string (each pair `path\0text`, pairs joined by \0), their sizes and inodes in pairs. */
export interface AppendMessage {
  id: number;
  text: string;
  at: Float64Array;
}

/** An append thread's answer: the size and inode after each append done, in pairs; then the one that stopped it, if any. */
export interface AppendAnswer {
  id: number;
  done: Float64Array;
  stop?: Exclude<AppendReply, AppendDone>;
}

/** Whether an append thread's answer is an append done (not 'changed', failed, or untried). */
export function isAppendDone(reply: AppendReply | undefined): reply is AppendDone {
  return typeof reply === 'object' && !('error' in reply);
}

/** One thread of AppendThreads: a job's share of appends per message, answered in order. */
class AppendWorker {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (r: AppendReply[]) => void; reject: (e: Error) => void }>();

  constructor(private readonly onFail: (err: Error) => void) {
    // built: the thread's compiled body beside this file; run from the sources (the tests), its
    // source, through tsx's loader registered in the thread first
    this.worker = import.meta.url.endsWith('.ts')
      ? new Worker(
          `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(new URL('./append-thread.ts', import.meta.url).href)}); })`,
          { eval: true },
        )
      : new Worker(new URL('./append-thread.js', import.meta.url));
    this.worker.unref();
    this.worker.on('message', (m: AppendAnswer) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      const results: AppendReply[] = [];
      for (let k = 0; k < m.done.length; k += 2) results.push({ size: m.done[k]!, ino: m.done[k + 1]! });
      if (m.stop !== undefined) results.push(m.stop);
      w?.resolve(results);
    });
    const fail = (err: Error) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
      this.onFail(err);
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`an append thread exited (code ${code})`)));
  }

  run(rows: readonly PlannedAppend[]): Promise<AppendReply[]> {
    const id = this.next++;
    // one string and one array of numbers, not an object per row: a job's thousand rows cross to
    // the thread as two copies, and their answers come back the same way
    let text = '';
    const at = new Float64Array(rows.length * 2);
    for (const [k, r] of rows.entries()) {
      text += k === 0 ? `${r.path}\u0000${r.text}` : `\u0000${r.path}\u0000${r.text}`;
      at[2 * k] = r.size;
      at[2 * k + 1] = r.ino;
    }
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, text, at } satisfies AppendMessage, [at.buffer]);
    });
  }

  stop(): Promise<number> {
    return this.worker.terminate();
  }
}

/**
 * Threads that run a job's planned appends (appendText), so their system calls — tens of µs each
 * on a busy machine, and at a whole market's boundary the longest part of a job — run beside the
 * writer's thread and beside each other. Each file always goes to the same thread (by its path),
 * and a thread runs its share in order, so rows reach each file in the order given. A thread stops
 * its share at the first append that is not done: the writer takes that one and the rest of that
 * share itself, with its own checks and retries. Nothing is kept open between messages.
 */
export class AppendThreads {
  private readonly workers: AppendWorker[];
  private failed: Error | undefined;

  constructor(threads: number) {
    this.workers = Array.from({ length: Math.max(1, threads) }, () => new AppendWorker((err) => (this.failed ??= err)));
  }

  /** whether the threads can take appends (none has failed, and they are not stopped) */
  get usable(): boolean {
    return this.failed === undefined;
  }

  /**
   * Runs the appends, each file's in the order given; the answer of each, in the order given,
   * undefined for one its thread did not try (after one there that was not done).
   */
  async appendMany(rows: readonly PlannedAppend[]): Promise<(AppendReply | undefined)[]> {
    if (this.failed) throw this.failed;
    const n = this.workers.length;
    const shares: { rows: PlannedAppend[]; at: number[] }[] = this.workers.map(() => ({ rows: [], at: [] }));
    for (const [k, row] of rows.entries()) {
      const share = shares[n === 1 ? 0 : pathHash(row.path) % n]!;
      share.rows.push(row);
      share.at.push(k);
    }
    const answers = await Promise.all(shares.map((s, w) => (s.rows.length ? this.workers[w]!.run(s.rows) : Promise.resolve([]))));
    const out: (AppendReply | undefined)[] = new Array(rows.length).fill(undefined);
    for (const [w, s] of shares.entries()) for (const [i, reply] of answers[w]!.entries()) out[s.at[i]!] = reply;
    return out;
  }

  async stop(): Promise<void> {
    this.failed ??= new Error('the append threads are stopped');
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}

/** A file's thread: a small hash of its path (FNV-1a), the same for the process's life. */
function pathHash(path: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < path.length; i++) {
    h ^= path.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
