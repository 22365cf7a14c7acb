import t from 'tap';
import {
  checkObservation,
  MAX_BATCH,
  MAX_LINE_BYTES,
  type ObservationContext,
  parseObservationLine,
} from '../agent/metrics/observation.js';
import { WindowAggregator } from '../agent/metrics/window-aggregator.js';
import { MetricsSchema } from '../shared/messages.js';

const versions = new Map<string, ReadonlySet<string>>([
  ['detector', new Set(['1.0.0', '1.1.0'])],
  ['constructor', new Set(['2.0.0'])],
]);
const ctx: ObservationContext = {
  knownVersions: (model) => versions.get(model),
  declaredValues: new Set(['boxes', 'tokens']),
};
const ok = { model: 'detector', version: '1.1.0', latencyMs: 12.5 };

function codeOf(line: string): string | undefined {
  return parseObservationLine(line, ctx).refused[0]?.code;
}

t.test('a valid observation and a valid batch', async (t) => {
  const one = parseObservationLine(
    JSON.stringify({ ...ok, confidence: 1, error: false, values: { boxes: 3, tokens: -2 } }),
    ctx,
  );
  t.same(one.refused, []);
  t.equal(one.dropped, 0);
  t.match(one.observations[0], { ...ok, confidence: 1, error: false });
  t.equal(Object.getPrototypeOf(one.observations[0]?.values), null, 'values is a null-prototype record');
  const batch = parseObservationLine(
    JSON.stringify([ok, { ...ok, model: 'constructor', version: '2.0.0' }, { ...ok, latencyMs: -1 }]),
    ctx,
  );
  t.equal(batch.observations.length, 2, 'a model named constructor is an ordinary model');
  t.equal(batch.refused.length, 1);
  t.equal(batch.refused[0]?.index, 2, 'a refusal in a batch names its index');
  t.equal(batch.dropped, 1);
});

t.test('every error code, with a message naming the fix', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['not json', 'E_METRICS_LINE', /not JSON/],
    ['42', 'E_METRICS_LINE', /object .* or a JSON array/],
    ['null', 'E_METRICS_LINE', /object/],
    [JSON.stringify(Array.from({ length: MAX_BATCH + 1 }, () => ok)), 'E_METRICS_LINE', /at most 1000/],
    ['[1]', 'E_METRICS_FIELD', /JSON object/],
    [JSON.stringify({ ...ok, model: 3 }), 'E_METRICS_FIELD', /"model"/],
    [JSON.stringify({ ...ok, version: undefined }), 'E_METRICS_FIELD', /"version"/],
    [JSON.stringify({ model: 'detector', version: '1.1.0' }), 'E_METRICS_FIELD', /"latencyMs" must be a number/],
    [JSON.stringify({ ...ok, latencyMs: '12' }), 'E_METRICS_FIELD', /latencyMs/],
    [JSON.stringify({ ...ok, latencyMs: 1e13 }), 'E_METRICS_FIELD', /latencyMs/],
    [JSON.stringify({ ...ok, confidence: 1.5 }), 'E_METRICS_FIELD', /\[0, 1\]/],
    [JSON.stringify({ ...ok, confidence: -0.1 }), 'E_METRICS_FIELD', /confidence/],
    [JSON.stringify({ ...ok, error: 'yes' }), 'E_METRICS_FIELD', /true or false/],
    [JSON.stringify({ ...ok, values: [1] }), 'E_METRICS_FIELD', /object of name to number/],
    [JSON.stringify({ ...ok, values: null }), 'E_METRICS_FIELD', /object of name to number/],
    [JSON.stringify({ ...ok, values: { boxes: 'three' } }), 'E_METRICS_FIELD', /"boxes" must be a number/],
    [JSON.stringify({ ...ok, input: 'pixels' }), 'E_METRICS_FIELD', /unknown field "input"/],
    [
      '{"__proto__":{"x":1},"model":"detector","version":"1.1.0","latencyMs":1}',
      'E_METRICS_FIELD',
      /unknown field "__proto__"/,
    ],
    [
      JSON.stringify({ ...ok, model: 'x' }),
      'E_METRICS_UNKNOWN_MODEL',
      /model "x" is not installed by this agent; report the model name/,
    ],
    [JSON.stringify({ ...ok, model: '../etc/passwd' }), 'E_METRICS_UNKNOWN_MODEL', /not installed/],
    [JSON.stringify({ ...ok, version: '9.9.9' }), 'E_METRICS_UNKNOWN_VERSION', /"1.0.0", "1.1.0"/],
    [JSON.stringify({ ...ok, values: { latency_p99: 3 } }), 'E_METRICS_VALUE_NAME', /not declared.*metrics.values/],
    [JSON.stringify({ ...ok, values: { 'Bad-Name': 3 } }), 'E_METRICS_VALUE_NAME', /not a valid name/],
  ];
  for (const [line, code, message] of cases) {
    const r = parseObservationLine(line, ctx);
    t.equal(r.observations.length, 0, `${line.slice(0, 60)}: nothing kept`);
    t.equal(r.refused[0]?.code, code, `${line.slice(0, 60)}: ${code}`);
    t.match(r.refused[0]?.message, message);
  }
  t.equal(
    parseObservationLine(JSON.stringify(Array.from({ length: MAX_BATCH + 1 }, () => ok)), ctx).dropped,
    MAX_BATCH + 1,
    'a batch refused whole counts all of it',
  );
  t.equal(codeOf('x'.repeat(10)), 'E_METRICS_LINE');
  const wide: ObservationContext = { ...ctx, declaredValues: new Set(['a', 'b', 'c', 'd', 'e']) };
  t.match(checkObservation({ ...ok, values: { a: 1, b: 2, c: 3, d: 4, e: 5 } }, wide), {
    code: 'E_METRICS_VALUE_NAME',
    message: /more than 4 names/,
  });
  t.equal(parseObservationLine('{}', ctx, MAX_LINE_BYTES + 1).refused[0]?.code, 'E_METRICS_LINE', 'too long');
  const noVersions: ObservationContext = { knownVersions: () => new Set(), declaredValues: new Set() };
  t.match(checkObservation(ok, noVersions), { code: 'E_METRICS_UNKNOWN_VERSION', message: /\(none\)/ });
  t.match(checkObservation({ ...ok, values: { boxes: 1 } }, { ...ctx, declaredValues: new Set() }), {
    message: /declared: none/,
  });
  const long = checkObservation({ ...ok, model: 'm'.repeat(500) }, ctx);
  t.ok('message' in long && long.message.length < 300, 'an echoed string is cut short');
});

t.test('smuggling attempts never reach the summary message', async (t) => {
  const agg = new WindowAggregator();
  const secrets = ['pixels', 'SECRET_TEXT', 'credit_card', 'passwd', 'the cat sat'];
  const lines = [
    JSON.stringify({ ...ok, values: { boxes: 'SECRET_TEXT' } }),
    JSON.stringify({ ...ok, input: 'pixels' }),
    JSON.stringify({ ...ok, values: { credit_card: 4111 } }),
    JSON.stringify({ ...ok, model: 'detector/../../etc/passwd' }),
    JSON.stringify({ ...ok, values: Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`v${i}`, i])) }),
    JSON.stringify({ ...ok, version: 'the cat sat' }),
    JSON.stringify([{ ...ok, output: 'the cat sat' }, ok]),
    JSON.stringify({ ...ok, values: { boxes: 2 } }),
  ];
  let dropped = 0;
  for (const line of lines) {
    const r = parseObservationLine(line, ctx);
    for (const o of r.observations) agg.add(o);
    agg.countDropped(r.dropped);
    dropped += r.dropped;
  }
  t.equal(dropped, 7);
  const message = agg.close(new Date('2025-01-01T00:00:00Z'), new Date('2025-01-01T00:01:00Z'), 60);
  t.ok(MetricsSchema.safeParse(message).success);
  const json = JSON.stringify(message);
  for (const s of [...secrets, 'v4999', 'output', 'input']) t.notOk(json.includes(s), `${s} is not in the message`);
  t.equal(message?.series[0]?.count, 2);
  t.same(Object.keys(message?.series[0]?.values ?? {}), ['boxes']);
  t.equal(message?.dropped?.observations, 7);
});
