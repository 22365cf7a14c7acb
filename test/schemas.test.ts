import { readFileSync } from 'node:fs';
import t from 'tap';
import type { z } from 'zod';
import { renderErrorsMarkdown, renderSchemas } from '../scripts/docs-render.js';
import { signManifest } from '../shared/envelope.js';
import {
  AuditEventSchema,
  CommandReplySchema,
  CommandRequestSchema,
  DESIRED_TYPE,
  DesiredMessageSchema,
  DesiredStateSchema,
  FleetSummarySchema,
  MetricsSchema,
  ReportedSchema,
  RolloutSummarySchema,
  StatusSchema,
} from '../shared/messages.js';
import { decodePayload, MAX_PAYLOAD_BYTES } from '../shared/payload.js';
import { ProbeSpecSchema } from '../shared/probe-spec.js';
import { signerFor } from '../shared/signatures.js';
import { keys, manifestFor } from './helpers/releases.js';

const TS = '2026-11-26T10:00:00.000Z';
const [key] = keys(1);
const envelope = signManifest(manifestFor(new Uint8Array([1, 2, 3])), [signerFor(key as NonNullable<typeof key>)]);
const hash = 'a'.repeat(64);

/** One valid sample per schema; every test below derives invalid ones from it. */
const SAMPLES = {
  desiredState: {
    schema: DesiredStateSchema,
    valid: {
      type: DESIRED_TYPE,
      deviceId: 'cam-1',
      seq: 3,
      issuedAt: TS,
      models: { detector: { envelope, rolloutId: 'r1' } },
    },
  },
  desiredMessage: {
    schema: DesiredMessageSchema,
    valid: { desired: '{"a":1}', signatures: [{ keyId: 'k', sig: 'AAAA' }] },
  },
  reported: {
    schema: ReportedSchema,
    valid: {
      deviceId: 'cam-1',
      seq: 3,
      ts: TS,
      models: {
        detector: {
          state: 'downloading',
          version: '2.0',
          current: '1.0',
          previousVersion: null,
          rolloutId: 'r1',
          progress: { bytes: 10, total: 100 },
          attempt: 1,
          error: null,
          updatedAt: TS,
        },
      },
      rejected: null,
    },
  },
  status: {
    schema: StatusSchema,
    valid: {
      online: true,
      ts: TS,
      agentVersion: '0.1.0',
      facts: {
        arch: 'arm64',
        cpuCores: 4,
        memoryMB: 4096,
        freeDiskMB: 1000,
        os: 'Debian 12',
        kernel: '6.1',
        accelerators: [],
      },
    },
  },
  metrics: {
    schema: MetricsSchema,
    valid: {
      ts: TS,
      windowStart: TS,
      windowSeconds: 60,
      windowsMerged: 1,
      series: [
        {
          model: 'detector',
          version: '1.0',
          source: 'app',
          count: 5,
          errors: 1,
          latencyMs: {
            level: 0,
            count: 5,
            sum: 40,
            min: 5,
            max: 12,
            zeros: 0,
            positive: { offset: 81, counts: [1, 3, 0, 1] },
          },
          confidence: [0, 0, 0, 0, 0, 0, 1, 1, 1, 1],
          values: { queue_depth: { level: 0, count: 2, sum: 0, min: 0, max: 0, zeros: 2 } },
        },
      ],
      dropped: { observations: 0, windows: 0 },
    },
  },
  rolloutSummary: {
    schema: RolloutSummarySchema,
    valid: {
      id: 'r1',
      model: 'detector',
      version: '2.0',
      status: 'running',
      currentWave: 1,
      maxFailureRate: 0.05,
      failures: { count: 0, acknowledged: 0, assigned: 1, rate: 0 },
      waves: [
        {
          wave: 1,
          percent: 1,
          approval: 'auto',
          state: 'running',
          devices: 1,
          counts: { downloading: 1 },
          reverted: 0,
        },
      ],
      haltReason: null,
      abortPolicy: null,
      reverted: 0,
      updatedAt: TS,
    },
  },
  fleetSummary: {
    schema: FleetSummarySchema,
    valid: {
      devices: 3,
      online: 2,
      models: [
        {
          model: 'detector',
          devices: 2,
          running: [
            { version: '2.0', devices: 1 },
            { version: null, devices: 1 },
          ],
          states: [{ state: 'healthy', devices: 2 }],
        },
      ],
      updatedAt: TS,
    },
  },
  auditEvent: {
    schema: AuditEventSchema,
    valid: {
      seq: 1,
      ts: TS,
      actor: 'admin',
      action: 'release.publish',
      subject: 'detector@2.0',
      details: {},
      prevHash: hash,
      hash,
    },
  },
  commandRequest: {
    schema: CommandRequestSchema,
    valid: { correlationId: 'c1', replyTo: 'ota/v1/reply/ops/c1', args: { id: 'r1' } },
  },
  commandReply: { schema: CommandReplySchema, valid: { correlationId: 'c1', ok: true, result: { n: 1 } } },
  probeSpec: {
    schema: ProbeSpecSchema,
    valid: { inputs: { x: { type: 'float32', dims: [1, 2], data: [1, 2] } }, golden: { y: { dims: [1], data: [3] } } },
  },
} satisfies Record<string, { schema: z.ZodType; valid: Record<string, unknown> }>;
type Sample = { schema: z.ZodType; valid: Record<string, unknown> };
const reportedModel = SAMPLES.reported.valid.models.detector;

/** A value of another JSON type than `v`. */
function wrongType(v: unknown): unknown {
  if (typeof v === 'string') return 12345;
  if (typeof v === 'number') return 'a string';
  if (typeof v === 'boolean') return 'true';
  if (Array.isArray(v)) return { not: 'an array' };
  if (v === null) return 42;
  return 'not an object';
}

t.test('every sample is valid', async (t) => {
  for (const [name, { schema, valid }] of Object.entries(SAMPLES as Record<string, Sample>)) {
    const r = schema.safeParse(valid);
    t.ok(r.success, `${name}: ${r.success ? '' : r.error.message}`);
  }
});

t.test('every schema rejects each missing required field', async (t) => {
  for (const [name, { schema, valid }] of Object.entries(SAMPLES as Record<string, Sample>)) {
    for (const field of Object.keys(valid)) {
      const copy = { ...valid };
      delete copy[field];
      const optional = schema.safeParse(copy).success;
      // Fields with defaults or optional by design: listed, so a field turning optional by accident fails here.
      const allowedOptional = new Set([
        'reported.rejected',
        'metrics.windowsMerged',
        'metrics.dropped',
        'status.agentVersion',
        'status.facts',
        'commandRequest.args',
        'probeSpec.golden',
      ]);
      t.equal(optional, allowedOptional.has(`${name}.${field}`), `${name} without ${field}`);
    }
  }
});

t.test('every schema rejects a wrong type in each field', async (t) => {
  for (const [name, { schema, valid }] of Object.entries(SAMPLES as Record<string, Sample>)) {
    for (const [field, value] of Object.entries(valid)) {
      if (name === 'commandReply' && field === 'result') continue; // result is any JSON by design
      const r = schema.safeParse({ ...valid, [field]: wrongType(value) });
      t.notOk(r.success, `${name}.${field} as ${JSON.stringify(wrongType(value))}`);
    }
    t.notOk(schema.safeParse(null).success, `${name}: null`);
    t.notOk(schema.safeParse([]).success, `${name}: array`);
  }
});

t.test('oversize strings are rejected by the schemas themselves', async (t) => {
  const huge = 'x'.repeat(300_000);
  const cases: [string, Record<string, unknown>][] = [
    ['desiredMessage', { desired: huge }],
    ['reported', { deviceId: huge }],
    ['status', { agentVersion: huge }],
    ['rolloutSummary', { haltReason: huge }],
    ['auditEvent', { actor: huge }],
    ['commandRequest', { correlationId: huge }],
    ['commandReply', { correlationId: huge }],
  ];
  for (const [name, patch] of cases) {
    const sample = (SAMPLES as Record<string, Sample>)[name] as Sample;
    t.notOk(
      sample.schema.safeParse({ ...sample.valid, ...patch }).success,
      `${name} with ${Object.keys(patch)[0]} of 300 kB`,
    );
  }
  const manyModels = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`m${i}`, reportedModel]));
  t.notOk(ReportedSchema.safeParse({ ...SAMPLES.reported.valid, models: manyModels }).success, '33 models');
  const bigProbe = { inputs: { x: { dims: [20000], data: new Array(20000).fill(0) } } };
  t.notOk(ProbeSpecSchema.safeParse(bigProbe).success, 'probe with 20000 values');
});

t.test('decodePayload: size cap before parsing, then JSON, then the schema', async (t) => {
  const reported: Sample = SAMPLES.reported;
  const ok = Buffer.from(JSON.stringify(reported.valid));
  t.same(decodePayload(ReportedSchema, ok, 'reported').deviceId, 'cam-1');
  t.throws(() => decodePayload(ReportedSchema, Buffer.alloc(MAX_PAYLOAD_BYTES + 1, 0x20), 'reported'), {
    code: 'E_PAYLOAD_TOO_LARGE',
  });
  t.throws(() => decodePayload(ReportedSchema, Buffer.from('{"deviceId":'), 'reported'), { code: 'E_PAYLOAD_JSON' });
  t.throws(() => decodePayload(ReportedSchema, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 'reported'), {
    code: 'E_PAYLOAD_JSON',
  });
  t.throws(() => decodePayload(ReportedSchema, Buffer.from('{"deviceId":"../x"}'), 'reported'), {
    code: 'E_PAYLOAD_SCHEMA',
    message: /reported: deviceId: must be/,
  });
  t.throws(() => decodePayload(ReportedSchema, '', 'reported'), { code: 'E_PAYLOAD_JSON' });
});

t.test('model names in per-model records are checked (they become paths on the device)', async (t) => {
  const reported: Sample = SAMPLES.reported;
  const models = reported.valid.models as Record<string, unknown>;
  t.notOk(ReportedSchema.safeParse({ ...reported.valid, models: { '../etc': models.detector } }).success);
  t.notOk(ReportedSchema.safeParse({ ...reported.valid, models: { 'a/b': models.detector } }).success);
});

t.test('probe spec: golden needs inputs; data must fill dims; extra probes need absolute paths', async (t) => {
  t.match(
    ProbeSpecSchema.safeParse({ golden: { y: { dims: [1], data: [1] } } }).error?.message ?? '',
    /golden outputs need explicit inputs/,
  );
  t.match(
    ProbeSpecSchema.safeParse({ inputs: { x: { dims: [2, 2], data: [1, 2, 3] } } }).error?.message ?? '',
    /has 3 values but dims \[2,2\] need 4/,
  );
  t.notOk(ProbeSpecSchema.safeParse({ extra: [{ kind: 'exec', path: 'relative/bin' }] }).success);
  t.notOk(ProbeSpecSchema.safeParse({ extra: [{ kind: 'file', path: '/a/../etc/passwd' }] }).success);
  t.notOk(ProbeSpecSchema.safeParse({ extra: [{ kind: 'http', url: 'file:///etc/passwd' }] }).success);
  const parsed = ProbeSpecSchema.parse({ extra: [{ kind: 'exec', path: '/usr/bin/true' }] });
  t.same(parsed.extra, [{ kind: 'exec', path: '/usr/bin/true', argv: [], timeoutMs: 10_000 }]);
  t.equal(parsed.attempts, 1);
  t.equal(parsed.timeoutMs, 30_000);
});

t.test('docs/schemas and docs/errors.md are what the code generates (run `npm run docs`)', async (t) => {
  for (const [name, text] of renderSchemas()) {
    t.equal(readFileSync(new URL(`../docs/schemas/${name}`, import.meta.url), 'utf8'), text, `docs/schemas/${name}`);
  }
  t.equal(
    readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8'),
    renderErrorsMarkdown(),
    'docs/errors.md',
  );
});
