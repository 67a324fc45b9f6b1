// Node.js counterpart of worker start + join: new Worker on an empty script, until it exits.
// Prints seconds per worker on the last line.
'use strict';
const { Worker } = require('worker_threads');
const n = 20;
(async () => {
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; ++i) {
    await new Promise((resolve, reject) => {
      const w = new Worker('', { eval: true });
      w.on('exit', resolve);
      w.on('error', reject);
    });
  }
  console.log(Number(process.hrtime.bigint() - start) / 1e9 / n);
})();
