import { z } from 'zod';
import { EnvelopeSchema } from '../shared/envelope.js';
import { ERROR_CODES } from '../shared/errors.js';
import { ManifestSchema } from '../shared/manifest.js';
import {
  AuditEventSchema,
  CommandReplySchema,
  CommandRequestSchema,
  DesiredMessageSchema,
  DesiredStateSchema,
  FleetSummarySchema,
  MetricsSchema,
  ReportedSchema,
  RolloutSummarySchema,
  StatusSchema,
} from '../shared/messages.js';
import { ProbeSpecSchema } from '../shared/probe-spec.js';

/**
 * Generated documentation: JSON Schema files for every payload and the error-code table. The
 * files are checked in; `npm run docs` rewrites them and a test fails when they drift from the code.
 */

const SCHEMAS: Record<string, { schema: z.ZodType; title: string }> = {
  'desired-message': { schema: DesiredMessageSchema, title: 'ota/v1/devices/{id}/desired payload (signed)' },
  'desired-state': { schema: DesiredStateSchema, title: 'the signed text inside a desired message' },
  reported: { schema: ReportedSchema, title: 'ota/v1/devices/{id}/reported payload' },
  status: { schema: StatusSchema, title: 'ota/v1/devices/{id}/status payload (also the LWT)' },
  metrics: { schema: MetricsSchema, title: 'ota/v1/devices/{id}/metrics payload' },
  'rollout-summary': { schema: RolloutSummarySchema, title: 'ota/v1/rollouts/{rolloutId} payload' },
  'audit-event': { schema: AuditEventSchema, title: 'ota/v1/audit payload' },
  'fleet-summary': { schema: FleetSummarySchema, title: 'ota/v1/fleet payload (retained)' },
  'command-request': { schema: CommandRequestSchema, title: 'ota/v1/cmd/{op} payload' },
  'command-reply': { schema: CommandReplySchema, title: 'payload published on a command replyTo topic' },
  'release-envelope': { schema: EnvelopeSchema, title: 'signed release envelope' },
  manifest: { schema: ManifestSchema, title: 'release manifest (the signed text inside an envelope)' },
  'probe-spec': { schema: ProbeSpecSchema, title: 'inference health probe spec' },
};

export function renderSchemas(): Map<string, string> {
  const files = new Map<string, string>();
  for (const [name, { schema, title }] of Object.entries(SCHEMAS)) {
    // "input": what a validator must accept (fields with defaults may be left out).
    const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
    const doc = { $id: `https://ota-models.dev/schemas/${name}.json`, title, ...json };
    files.set(`${name}.json`, `${JSON.stringify(doc, null, 2)}\n`);
  }
  return files;
}

export function renderErrorsMarkdown(): string {
  const rows = Object.entries(ERROR_CODES).map(
    ([code, { area, meaning, fix }]) => `| \`${code}\` | ${area} | ${meaning} | ${fix} |`,
  );
  return [
    '# Error codes',
    '',
    'Every failure the project reports carries one of these stable codes: in `otactl` output',
    '(`error E_CODE: message`, exit 1), in device reports (`error.code`), and in command replies.',
    'This file is generated from `shared/errors.ts` by `npm run docs`; do not edit it by hand.',
    '',
    '| code | area | meaning | what to do |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
