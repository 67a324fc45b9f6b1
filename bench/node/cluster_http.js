// Node.js counterpart of examples/cluster_http.cpp: a keep-alive HTTP/1.1 "hello" server on
// `cluster` + `http`. Usage: node cluster_http.js <workers> <port> [rr|none]
// The primary prints "listening <port>" once every worker listens, then serves until
// SIGTERM/SIGINT. With 0 workers one process serves alone, without cluster.
'use strict';
const cluster = require('cluster');
const http = require('http');

const workers = Number(process.argv[2] ?? 1);
const port = Number(process.argv[3] ?? 8080);
const sched = process.argv[4] ?? 'rr';

function serve(onListening) {
  const body = 'Hello, world!\n';
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 60000;
  server.listen(port, '127.0.0.1', onListening);
}

if (workers === 0) {
  serve(() => console.log(`listening ${port}`));
} else if (cluster.isPrimary) {
  cluster.schedulingPolicy = sched === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  let listening = 0;
  cluster.on('listening', () => {
    if (++listening === workers) console.log(`listening ${port}`);
  });
  for (let i = 0; i < workers; ++i) cluster.fork();
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].kill();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  serve(() => {});
}
