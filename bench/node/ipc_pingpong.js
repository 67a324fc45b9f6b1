// Node.js counterpart of the IPC ping-pong: process.send round trips with a forked child.
// Prints round trips per second on the last line.
'use strict';
const { fork } = require('child_process');
if (process.argv[2] === 'child') {
  process.on('message', (m) => process.send(m));
} else {
  const n = Number(process.argv[2] || 20000);
  const child = fork(__filename, ['child']);
  let i = 0;
  const start = process.hrtime.bigint();
  child.on('message', () => {
    if (++i === n) {
      console.log(n / (Number(process.hrtime.bigint() - start) / 1e9));
      child.disconnect();
    } else {
      child.send(i);
    }
  });
  child.send(0);
}
