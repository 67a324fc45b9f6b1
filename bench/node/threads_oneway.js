// Node.js counterpart of one-way channel throughput: a Worker posts small messages to the
// main thread as fast as it can. Prints messages per second on the last line.
'use strict';
const { Worker } = require('worker_threads');
const n = 1000000;
const w = new Worker(`
  const { parentPort, workerData } = require('worker_threads');
  for (let i = 0; i < workerData; ++i) parentPort.postMessage(i);
`, { eval: true, workerData: n });
let got = 0;
let start;
w.on('online', () => { start = process.hrtime.bigint(); });
w.on('message', () => {
  if (++got === n) {
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(n / seconds);
    w.terminate();
  }
});
