// Node.js counterpart of the atomic_view wait/notify ping-pong: the main thread and a worker
// take turns on one Int32Array cell with Atomics.wait and Atomics.notify.
// Prints round trips per second on the last line.
'use strict';
const { Worker, isMainThread, workerData } = require('node:worker_threads');
const rounds = 100_000;

if (isMainThread) {
  const cells = new Int32Array(new SharedArrayBuffer(64));
  const worker = new Worker(__filename, { workerData: cells });
  // The worker announces itself on cell 1 before the clock starts.
  while (Atomics.load(cells, 1) === 0) Atomics.wait(cells, 1, 0, 10);
  const start = process.hrtime.bigint();
  for (let k = 0; k < rounds; ++k) {
    Atomics.store(cells, 0, 2 * k + 1);
    Atomics.notify(cells, 0);
    while (Atomics.load(cells, 0) !== 2 * k + 2) Atomics.wait(cells, 0, 2 * k + 1);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  worker.on('exit', () => console.log(rounds / seconds));
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
