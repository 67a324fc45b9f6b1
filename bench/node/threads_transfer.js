// Node.js counterpart of the 64 MiB buffer transfer: an ArrayBuffer sent to a Worker and back
// with a transfer list. Prints seconds per round trip on the last line.
'use strict';
const { Worker } = require('worker_threads');
const n = 50;
const w = new Worker(`
  const { parentPort } = require('worker_threads');
  parentPort.on('message', (b) => parentPort.postMessage(b, [b]));
`, { eval: true });
let left = n;
let start;
w.on('message', (b) => {
  if (--left === 0) {
    console.log(Number(process.hrtime.bigint() - start) / 1e9 / n);
    w.terminate();
  } else {
    w.postMessage(b, [b]);
  }
});
w.on('online', () => {
  const b = new ArrayBuffer(64 * 1024 * 1024);
  start = process.hrtime.bigint();
  w.postMessage(b, [b]);
});
