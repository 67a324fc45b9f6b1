// Node.js counterpart of atomic_view::add: Atomics.add on an Int32Array over a
// SharedArrayBuffer, one thread. Prints operations per second on the last line.
'use strict';
const n = 20_000_000;
const cells = new Int32Array(new SharedArrayBuffer(64));
let best = Infinity;
for (let r = 0; r < 3; ++r) {
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; ++i) Atomics.add(cells, 0, 1);
  best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
}
console.log(n / best);
