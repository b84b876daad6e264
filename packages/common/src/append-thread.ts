/**
 * An append thread's body (see AppendThreads in append.ts): each message is a job's planned
 * appends, run in order with appendText; the answer stops at the first that is not done.
 */
import { parentPort } from 'node:worker_threads';
import { AppendError, appendText, type AppendReply } from './append.js';

parentPort?.on('message', (m: { id: number; rows: [string, string, number, number][] }) => {
  const results: AppendReply[] = [];
  for (const [path, text, size, ino] of m.rows) {
    try {
      const done = appendText(path, text, size, ino);
      results.push(done);
      if (done === 'changed') break;
    } catch (err) {
      const cause = err instanceof AppendError ? err.cause : err;
      results.push({
        error: cause instanceof Error ? cause.message : String(cause),
        code: (cause as NodeJS.ErrnoException | undefined)?.code,
        partialRow: err instanceof AppendError && err.partialRow,
      });
      break;
    }
  }
  parentPort!.postMessage({ id: m.id, results });
});
