// The tasks of pool_piscina.js, exported by name.
'use strict';
function tiny(i) {
  return i * 2;
}
function cpu(i) {
  const end = process.hrtime.bigint() + 1000000n;
  let x = i;
  while (process.hrtime.bigint() < end) x = (x * 1103515245 + 12345) % 2147483648;
  return x;
}
module.exports = tiny;
module.exports.tiny = tiny;
module.exports.cpu = cpu;
