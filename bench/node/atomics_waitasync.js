// Node.js counterpart of the wait_async wake latency: the main thread awaits
// Atomics.waitAsync while a worker answers with Atomics.wait and Atomics.notify.
// Prints seconds per round trip on the last line.
'use strict';
const { Worker, isMainThread, workerData } = require('node:worker_threads');
const rounds = 20_000;

if (isMainThread) {
  const cells = new Int32Array(new SharedArrayBuffer(64));
  const worker = new Worker(__filename, { workerData: cells });
  (async () => {
    while (Atomics.load(cells, 1) === 0) {
      const w = Atomics.waitAsync(cells, 1, 0, 10);
      if (w.async) await w.value;
    }
    const start = process.hrtime.bigint();
    for (let k = 0; k < rounds; ++k) {
      Atomics.store(cells, 0, 2 * k + 1);
      Atomics.notify(cells, 0);
      while (Atomics.load(cells, 0) !== 2 * k + 2) {
        const w = Atomics.waitAsync(cells, 0, 2 * k + 1);
        if (w.async) await w.value;
      }
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    worker.on('exit', () => console.log(seconds / rounds));
  })();
} else {
  const cells = workerData;
  Atomics.store(cells, 1, 1);
  Atomics.notify(cells, 1);
  for (let k = 0; k < rounds; ++k) {
    while (Atomics.load(cells, 0) !== 2 * k + 1) Atomics.wait(cells, 0, 2 * k);
    Atomics.store(cells, 0, 2 * k + 2);
    Atomics.notify(cells, 0);
  }
}
