// Piscina counterpart of the worker_pool rows: `n` tasks of the given kind ("tiny": return
// its argument doubled; "cpu": spin for 1 ms) through a Piscina pool with one thread per
// core, 64 in flight at a time. Prints tasks per second on the last line. Piscina is looked
// up in CONFLUX_PISCINA_DIR (bench/run installs it there); exits 2 when it is missing.
'use strict';
const os = require('os');
const path = require('path');
let Piscina;
try {
  Piscina = require(path.join(process.env.CONFLUX_PISCINA_DIR || '', 'node_modules', 'piscina'));
} catch (e) {
  console.error('piscina: not installed');
  process.exit(2);
}
const kind = process.argv[2] || 'tiny';
const n = Number(process.argv[3] || 100000);
const threads = os.cpus().length;
const pool = new Piscina({
  filename: path.join(__dirname, 'pool_piscina_worker.js'),
  minThreads: threads,
  maxThreads: threads,
});

async function client(count) {
  for (let i = 0; i < count; ++i) await pool.run(i, { name: kind });
}

async function measure(total) {
  const inFlight = 64;
  const start = process.hrtime.bigint();
  const clients = [];
  for (let c = 0; c < inFlight; ++c) clients.push(client(Math.ceil(total / inFlight)));
  await Promise.all(clients);
  return Number(process.hrtime.bigint() - start) / 1e9;
}

(async () => {
  await measure(Math.min(n, 2000)); // warm-up: threads started, code compiled
  const seconds = await measure(n);
  console.log(n / seconds);
  await pool.destroy();
})();
