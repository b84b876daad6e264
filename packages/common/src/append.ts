import { closeSync, fstatSync, ftruncateSync, openSync, writeSync } from 'node:fs';
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
 * The system calls of one append, whole or not at all: open, fstat, the check that the file is as
 * the writer left it (`size`, `ino`; 'changed', writing nothing, when not — or when it is gone),
 * write, and on a failed write the file cut back to `size` before the error is thrown (as an
 * AppendError). Four system calls and no handle kept: 48,000 files of a whole market need no more
 * open files than one. Run by CsvFiles in its thread, and by the writer's append thread for a job's
 * rows planned with CsvFiles.plan.
 */
export function appendText(path: string, text: string, size: number, ino: number, check = true): AppendDone | 'changed' {
  let fd: number;
  try {
    fd = openSync(path, 'a');
  } catch (err) {
    // its folder removed under the writer: the file is gone, which verify reports (rows missing)
    if (check && size !== 0 && (err as NodeJS.ErrnoException).code === 'ENOENT') return 'changed';
    throw new AppendError(err, false);
  }
  try {
    const before = fstatSync(fd);
    if (check && (before.size !== size || (ino !== 0 && before.ino !== ino))) return 'changed';
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
    return { size: before.size + buf.length, ino: before.ino };
  } finally {
    closeSync(fd);
  }
}

/** What the append thread answers for one planned append: done, 'changed', or failed (the thread stops there). */
export type AppendReply = AppendDone | 'changed' | { error: string; code?: string; partialRow: boolean };

/**
 * A thread that runs a job's planned appends (appendText, one after another, in order), so their
 * system calls — tens of µs each on a busy machine — leave the writer's thread free for the next
 * job's rows and the last one's publish. It stops at the first append that is not done: the
 * writer takes that one and the rest itself, with its own checks and retries. Nothing is kept
 * open between messages.
 */
export class AppendThread {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (r: AppendReply[]) => void; reject: (e: Error) => void }>();
  private failed: Error | undefined;

  constructor() {
    this.worker = new Worker(new URL('./append-thread.js', import.meta.url));
    this.worker.unref();
    this.worker.on('message', (m: { id: number; results: AppendReply[] }) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      w?.resolve(m.results);
    });
    const fail = (err: Error) => {
      this.failed = err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the append thread exited (code ${code})`)));
  }

  /** whether the thread can take appends (it has not failed or been stopped) */
  get usable(): boolean {
    return this.failed === undefined;
  }

  /** Runs the appends in order; the answers of those done, up to and with the first that is not. */
  appendMany(rows: readonly PlannedAppend[]): Promise<AppendReply[]> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, rows: rows.map((r) => [r.path, r.text, r.size, r.ino]) });
    });
  }

  async stop(): Promise<void> {
    this.failed ??= new Error('the append thread is stopped');
    await this.worker.terminate();
  }
}
