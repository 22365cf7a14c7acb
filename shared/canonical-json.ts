/**
 * Canonical JSON: object keys sorted by UTF-16 code units, no insignificant whitespace, strings
 * and numbers as ECMAScript's JSON.stringify writes them. For the value space the protocol uses
 * (strings, finite numbers, booleans, null, arrays, plain objects) this is the JSON
 * Canonicalization Scheme of RFC 8785, so two writers produce byte-identical text.
 *
 * Used to produce the text that is signed and the rows that are hashed; verification never
 * re-serialises: it checks the exact bytes it was given.
 */
export function canonicalJson(value: unknown): string {
  return write(value, '$');
}

function write(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      // RFC 8785 section 3.2.2.3: NaN and Infinity have no JSON form.
      if (!Number.isFinite(value)) throw new TypeError(`canonical JSON: ${path} is not a finite number`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        return `[${value.map((item, i) => write(item, `${path}[${i}]`)).join(',')}]`;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new TypeError(`canonical JSON: ${path} is not a plain object`);
      }
      const entries = Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        // Default sort compares UTF-16 code units, as RFC 8785 section 3.2.3 requires.
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${write(v, `${path}.${k}`)}`).join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON: ${path} has unsupported type ${typeof value}`);
  }
}
