// Node.js counterpart of exec_file("/bin/true"): sequential execFile latency, and with
// argument "parallel" the throughput with 32 in flight. Prints seconds per spawn (sequential)
// or spawns per second (parallel) on the last line.
'use strict';
const { execFile } = require('child_process');
const run = (file) =>
  new Promise((resolve, reject) =>
    execFile(file, [], (err) => (err ? reject(err) : resolve())));
(async () => {
  const parallel = process.argv[2] === 'parallel';
  const n = parallel ? 320 : 200;
  let best = Infinity;
  for (let rep = 0; rep < 3; ++rep) {
    const start = process.hrtime.bigint();
    if (parallel) {
      let next = 0;
      const worker = async () => {
        while (next < n) {
          ++next;
          await run('/bin/true');
        }
      };
      await Promise.all(Array.from({ length: 32 }, worker));
    } else {
      for (let i = 0; i < n; ++i) await run('/bin/true');
    }
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
  }
  console.log(parallel ? n / best : best / n);
})();
