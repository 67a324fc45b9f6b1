// Node.js counterpart of the line-by-line stdin row: writes N short lines into `cat` (whose
// stdout is discarded) with child.stdin.write, waiting for 'drain' when write() asks to, then
// ends stdin and waits for the exit. Prints lines per second (best of 3) on the last line.
'use strict';
const { spawn } = require('child_process');
const { once } = require('events');

async function run(n) {
  const child = spawn('cat', [], { stdio: ['pipe', 'ignore', 'inherit'] });
  const exited = once(child, 'exit');
  for (let i = 0; i < n; ++i) {
    if (!child.stdin.write(`line ${i}\n`)) await once(child.stdin, 'drain');
  }
  child.stdin.end();
  await exited;
}

(async () => {
  const n = Number(process.argv[2] || 1000000);
  await run(n / 10);
  let best = Infinity;
  for (let rep = 0; rep < 3; ++rep) {
    const start = process.hrtime.bigint();
    await run(n);
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
  }
  console.log(n / best);
})();
