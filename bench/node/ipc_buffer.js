// Node.js counterpart of the 64 MiB buffer transfer: Node cannot pass memory to a child, so
// the buffer is sent through the channel (advanced serialization). Prints seconds per
// transfer (send to acknowledgement) on the last line.
'use strict';
const { fork } = require('child_process');
if (process.argv[2] === 'child') {
  process.on('message', (m) => process.send(m.length));
} else {
  const child = fork(__filename, ['child'], { serialization: 'advanced' });
  const buf = Buffer.alloc(64 << 20, 7);
  const start = process.hrtime.bigint();
  child.on('message', () => {
    console.log(Number(process.hrtime.bigint() - start) / 1e9);
    child.disconnect();
  });
  child.send(buf);
}
