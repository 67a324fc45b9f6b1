// Node.js counterpart of the channel ping-pong: postMessage round trips between the main
// thread and a Worker. Prints round trips per second on the last line.
'use strict';
const { Worker } = require('worker_threads');
const n = 100000;
const w = new Worker(`
  const { parentPort } = require('worker_threads');
  parentPort.on('message', (m) => parentPort.postMessage(m));
`, { eval: true });
let left = n;
let start;
w.on('message', () => {
  if (--left === 0) {
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(n / seconds);
    w.terminate();
  } else {
    w.postMessage(left);
  }
});
w.on('online', () => {
  start = process.hrtime.bigint();
  w.postMessage(left);
});
