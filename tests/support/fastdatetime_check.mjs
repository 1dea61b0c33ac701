// Compares the worker's fast dateTime path with cql-execution's own DateTime.parse on a generated
// corpus (run by tests/test_worker_fastpaths.py). Every string the fast path accepts must give the
// same fields and text as parse; the others are left to parse. Prints {total, handled, bad} as JSON.
import { createRequire } from 'node:module';
import { makeFastDateTime } from '../../guideline/worker/fastdatetime.mjs';

const require = createRequire(new URL('../../package.json', import.meta.url));
const cql = require('cql-execution');
const fast = makeFastDateTime(cql.DateTime);
const pad = (n, w = 2) => String(n).padStart(w, '0');

const years = [1, 1900, 1999, 2000, 2024, 2026, 2100, 9999];
const offsets = ['Z', '+00:00', '-00:00', '+02:00', '-05:30', '+14:00', '+23:59', '+24:00', '-12:60', '+02', '+0200', ''];
const times = ['00:00:00', '23:59:59', '12:30:45', '24:00:00', '12:60:00', '12:00:60', '07:05', '07'];
const millis = ['', '.000', '.5', '.05', '.123', '.999', '.1234'];
const corpus = [];
for (const y of years) {
  for (let m = 0; m <= 13; m += 1) {
    for (const d of [0, 1, 28, 29, 30, 31, 32]) {
      const time = times[(y + m + d) % times.length];
      const ms = millis[(m + d) % millis.length];
      const offset = offsets[(y + d + m) % offsets.length];
      corpus.push(`${pad(y, 4)}-${pad(m)}-${pad(d)}T${time}${ms}${offset}`);
    }
  }
}
for (const t of times) for (const ms of millis) for (const o of offsets) corpus.push(`2024-02-29T${t}${ms}${o}`);
corpus.push('2026', '2026-06', '2026-06-01', '2026-06-01T', 'not a date');
corpus.push('2026-06-01T12:00:00Zjunk', ' 2026-06-01T12:00:00Z');

const fields = (x) => x && JSON.stringify([
  x.year, x.month, x.day, x.hour, x.minute, x.second, x.millisecond, x.timezoneOffset, x.toString(),
]);
let handled = 0;
const bad = [];
for (const s of corpus) {
  const f = fast(s);
  if (f === undefined) continue;
  handled += 1;
  const p = cql.DateTime.parse(s);
  if (fields(f) !== fields(p)) bad.push({ s, fast: fields(f), parse: fields(p) });
}
process.stdout.write(JSON.stringify({ total: corpus.length, handled, bad }));
