/**
 * The garbage collector's pauses of the process, appended to $BENCH_GC_DIR/<role>-<pid>.jsonl as
 * they happen, a line each: {kind, at (wall ms), ms, heapMb}. Loaded with NODE_OPTIONS=--require,
 * so every process a stack starts logs its own (its worker threads load it too, and write theirs,
 * together, to threads-<pid>.jsonl). Read them with bench/gc-top.ts.
 */
const { PerformanceObserver, constants } = require('node:perf_hooks');
const { isMainThread } = require('node:worker_threads');
const { appendFileSync } = require('node:fs');
const { getHeapStatistics } = require('node:v8');

const dir = process.env.BENCH_GC_DIR;
if (dir) {
  // (a worker thread does not know its process's role: its file is named by the process's pid)
  const file = isMainThread ? `${dir}/${process.argv[2] ?? 'main'}-${process.pid}.jsonl` : `${dir}/threads-${process.pid}.jsonl`;
  const kinds = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  const origin = performance.timeOrigin;
  let lines = [];
  const flush = () => {
    if (lines.length) appendFileSync(file, lines.join('\n') + '\n');
    lines = [];
  };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      lines.push(
        JSON.stringify({
          kind: kinds[e.detail?.kind] ?? String(e.detail?.kind),
          at: Math.round(origin + e.startTime),
          ms: Number(e.duration.toFixed(2)),
          // (the heap alone: process.memoryUsage() would read the resident set from the system each time)
          heapMb: getHeapStatistics().used_heap_size >> 20,
        }),
      );
    if (lines.length >= 50) flush();
  }).observe({ entryTypes: ['gc'] });
  setInterval(flush, 1000).unref();
  process.on('exit', flush);
}
