/**
 * A V8 CPU profile of the process, written to $BENCH_PROFILE_DIR/<role>-<pid>.cpuprofile when it
 * exits: loaded with NODE_OPTIONS=--require (which refuses --cpu-prof itself), so every process a
 * stack starts is profiled. Read them with bench/profile-top.ts.
 */
const inspector = require('node:inspector');
const { writeFileSync } = require('node:fs');

const dir = process.env.BENCH_PROFILE_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 1000 });
  session.post('Profiler.start');
  let written = false;
  process.on('exit', () => {
    if (written) return;
    written = true;
    // an in-process session answers at once, so this runs before the process is gone
    session.post('Profiler.stop', (err, r) => {
      if (!err) writeFileSync(`${dir}/${process.argv[2] ?? 'main'}-${process.pid}.cpuprofile`, JSON.stringify(r.profile));
    });
  });
}
