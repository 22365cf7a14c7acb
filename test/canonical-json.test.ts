import t from 'tap';
import { canonicalJson } from '../shared/canonical-json.js';

t.test('stable under key reordering, at every depth', async (t) => {
  const a = { model: 'm', nested: { z: [1, { y: 2, x: 1 }], a: null }, counter: 3, ok: true };
  const b = { ok: true, counter: 3, nested: { a: null, z: [1, { x: 1, y: 2 }] }, model: 'm' };
  t.equal(canonicalJson(a), canonicalJson(b));
  t.equal(canonicalJson(a), '{"counter":3,"model":"m","nested":{"a":null,"z":[1,{"x":1,"y":2}]},"ok":true}');
});

t.test('array order is kept, no whitespace, undefined members dropped', async (t) => {
  t.equal(canonicalJson([3, 1, 2]), '[3,1,2]');
  t.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
  t.equal(canonicalJson({}), '{}');
});

t.test('keys sort by UTF-16 code units and strings escape like JSON.stringify (RFC 8785)', async (t) => {
  // RFC 8785 section 3.2.3 example ordering: "\r" < "1" < "\u0080" < "\u00f6" < "\u20ac" < "\ud83d\ude00" < "\ufb33"
  const value = { '\ufb33': 1, '\u20ac': 2, '\r': 3, '\ud83d\ude00': 4, '1': 5, '\u00f6': 6, '\u0080': 7 };
  t.equal(canonicalJson(value), '{"\\r":3,"1":5,"\u0080":7,"\u00f6":6,"\u20ac":2,"\ud83d\ude00":4,"\ufb33":1}');
  t.equal(canonicalJson('line\nbreak "q"'), '"line\\nbreak \\"q\\""');
});

t.test('numbers as ECMAScript writes them; non-finite numbers and odd values refused', async (t) => {
  t.equal(canonicalJson([1e21, 0.1, -0, 1.5e-7]), '[1e+21,0.1,0,1.5e-7]');
  t.throws(() => canonicalJson({ x: Number.NaN }), /\$\.x is not a finite number/);
  t.throws(() => canonicalJson([Number.POSITIVE_INFINITY]), /not a finite number/);
  t.throws(() => canonicalJson({ d: new Date(0) }), /not a plain object/);
  t.throws(() => canonicalJson({ f: () => 1 }), /unsupported type function/);
  t.throws(() => canonicalJson(10n), /unsupported type bigint/);
});
