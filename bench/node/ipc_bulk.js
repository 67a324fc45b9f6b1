// Node.js counterpart of the bulk one-way IPC benchmark: n small messages to a forked child,
// which reports the count at the end. Prints messages per second on the last line.
'use strict';
const { fork } = require('child_process');
if (process.argv[2] === 'child') {
  let count = 0;
  process.on('message', (m) => {
    if (m === 0) process.send(count);
    else ++count;
  });
} else {
  const n = Number(process.argv[2] || 200000);
  const child = fork(__filename, ['child']);
  const start = process.hrtime.bigint();
  for (let i = 1; i <= n; ++i) child.send(i);
  child.send(0);
  child.on('message', () => {
    console.log(n / (Number(process.hrtime.bigint() - start) / 1e9));
    child.disconnect();
  });
}
