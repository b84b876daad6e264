/**
 * An append thread's body (see AppendThreads in append.ts): each message is a job's planned
 * appends, run in order with appendText; the answer stops at the first that is not done.
 */
import { parentPort } from 'node:worker_threads';
import { AppendError, appendText, type AppendAnswer, type AppendMessage } from './append.js';

parentPort?.on('message', (m: AppendMessage) => {
  const parts = m.text.split('\u0000');
  const rows = parts.length >> 1;
  const done = new Float64Array(rows * 2);
  let n = 0;
  let stop: AppendAnswer['stop'];
  for (let k = 0; k < rows; k++) {
    try {
      const r = appendText(parts[2 * k]!, parts[2 * k + 1]!, m.at[2 * k]!, m.at[2 * k + 1]!);
      if (r === 'changed') {
        stop = r;
        break;
      }
      done[2 * n] = r.size;
      done[2 * n + 1] = r.ino;
      n++;
    } catch (err) {
      const cause = err instanceof AppendError ? err.cause : err;
      stop = {
        error: cause instanceof Error ? cause.message : String(cause),
        code: (cause as NodeJS.ErrnoException | undefined)?.code,
        partialRow: err instanceof AppendError && err.partialRow,
      };
      break;
    }
  }
  const answer: AppendAnswer = { id: m.id, done: done.subarray(0, 2 * n), ...(stop !== undefined ? { stop } : {}) };
  parentPort!.postMessage(answer, [done.buffer]);
});
