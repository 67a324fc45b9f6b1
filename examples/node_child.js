// The Node.js side of examples/node_child.cpp: a child forked by a conflux parent over
// Node's own IPC channel (serialization 'json'). It sums the numbers it is sent.
'use strict';
let total = 0;
process.on('message', (message) => {
    if (message.done) {
        process.send({ total });
        process.disconnect();
        return;
    }
    total += message.add;
    process.send({ ack: message.add, runtime: `node ${process.version}` });
});
