import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A small disk for the full-disk tests and the fault campaign: a tmpfs of `kb` KiB mounted at
 * `dir` (needs root). Returns the unmount.
 */
export function mountTmpfs(dir: string, kb: number): () => void {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${kb}k`, 'tmpfs', dir]);
  return () => {
    try {
      execFileSync('umount', ['-l', dir]);
    } catch {
      // already gone
    }
  };
}

/** Fills the filesystem of `dir` with a file until at most `leaveKb` KiB are free; returns its path. */
export function fillDisk(dir: string, leaveKb = 0): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4096, 'x');
  try {
    for (;;) {
      const free = Number(execFileSync('df', ['--output=avail', '-k', dir]).toString().split('\n')[1]);
      if (free <= leaveKb) break;
      writeSync(fd, chunk);
    }
  } catch {
    // ENOSPC: full
  } finally {
    closeSync(fd);
  }
  return path;
}
