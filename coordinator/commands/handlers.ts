import { z } from 'zod';
import { DEVICE_FILTER_STATES } from '../../shared/device-filter.js';
import { EnvelopeSchema } from '../../shared/envelope.js';
import { OtaError } from '../../shared/errors.js';
import type { ReportedModels } from '../../shared/messages.js';
import { ROLLOUT_DEVICE_STATES } from '../../shared/states.js';
import type { ExperimentService } from '../experiments/experiment-service.js';
import type { FleetService } from '../fleet/fleet-service.js';
import { type MetricsQueryArgs, MetricsQueryArgsSchema } from '../metrics/query-args.js';
import type { RolloutService } from '../rollout/rollout-service.js';
import { parseWaves } from '../rollout/strategy.js';
import type { Role } from '../store/records.js';
import type { Store } from '../store/store.js';
import { idArg, versionArg } from './arg-schemas.js';
import { DEFAULT_FIND_LIMIT, deviceRow, findDevices, MAX_FIND_LIMIT } from './device-rows.js';
import { type Op, opsFor } from './ops.js';
import { channelView, groupView, keyView, operatorView } from './views.js';

export interface CommandContext {
  store: Store;
  fleet: FleetService;
  rollouts: RolloutService;
  experiments: ExperimentService;
  /** Size of an uploaded artifact, or null when it is not in the artifact store. */
  artifactSize: (sha256: string) => Promise<number | null>;
  actor: string;
  /** The role of the operator who asked. */
  role: Role;
  /** Device metrics summaries (coordinator/metrics): what `otactl metrics` reads. */
  metrics: { query(args: MetricsQueryArgs): unknown };
  /** The models of a device's newest report, kept in memory (ReportRecorder), else the store's. */
  lastModels: (deviceId: string) => ReportedModels | null | undefined;
}

const id = idArg;
const version = versionArg;
const labels = z.record(id, z.string().min(1).max(128)).refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');
const rolloutId = z.strictObject({ id });

/** Argument schemas, one per op; unknown keys are refused so a typo is not silently ignored. */
const ARGS = {
  'key.add': z.strictObject({ key: z.unknown(), name: z.string().min(1).max(64).optional() }),
  'key.ls': z.strictObject({}),
  'key.revoke': z.strictObject({
    keyId: z.string().regex(/^[0-9a-f]{32}$/, 'a key id: 32 hex digits, as `otactl key ls` shows'),
  }),
  // Checked by the trust verifier itself (E_TRUST_DOCUMENT names what is wrong).
  'trust.publish': z.strictObject({ envelope: z.unknown() }),
  'trust.show': z.strictObject({}),
  'device.add': z.strictObject({ id, labels: labels.optional(), channel: id.optional() }),
  // A page, by id (a fleet of 50,000 is a ~13 MB reply otherwise): the devices after `after`.
  'device.ls': z.strictObject({ after: id.optional(), limit: z.number().int().min(1).optional() }),
  // The dashboard's devices list: filtered and paged here, so a page is all that is sent.
  'device.find': z.strictObject({
    text: z.string().max(200).optional(),
    state: z.enum(DEVICE_FILTER_STATES).optional(),
    model: id.optional(),
    version: version.optional(),
    offset: z.number().int().min(0).optional(),
    limit: z.number().int().min(1).max(MAX_FIND_LIMIT).optional(),
  }),
  'device.show': z.strictObject({ id }),
  'device.rm': z.strictObject({ id }),
  'group.create': z.strictObject({
    name: id,
    devices: z.array(id).min(1).max(100_000).optional(),
    selector: labels.optional(),
  }),
  'group.ls': z.strictObject({}),
  'release.publish': z.strictObject({ envelope: EnvelopeSchema, channel: id.optional(), yes: z.boolean().optional() }),
  'release.ls': z.strictObject({ model: id.optional() }),
  'channel.set': z.strictObject({ model: id, channel: id, version, yes: z.boolean().optional() }),
  'channel.ls': z.strictObject({}),
  'rollout.create': z.strictObject({
    id: id.optional(),
    model: id,
    version,
    group: id.optional(),
    devices: z.array(id).min(1).max(100_000).optional(),
    selector: labels.optional(),
    waves: z.union([z.string().min(1).max(2000), z.array(z.unknown()).max(100)]),
    maxFailureRate: z.number().optional(),
    channel: id.optional(),
    /** What analysis gates (`5:analysis`) check: checked by validateStrategy (rollout/analysis-spec.ts). */
    analysis: z.unknown().optional(),
  }),
  'rollout.ls': z.strictObject({}),
  'rollout.status': z.strictObject({
    id,
    // A page of the devices (a rollout of 50,000 is a ~15 MB reply otherwise), of one wave
    // (1-based) and one state when given.
    wave: z.number().int().min(1).optional(),
    state: z.enum(ROLLOUT_DEVICE_STATES).optional(),
    // 'attention': failed first, then unfinished, then healthy (a watch showing a few rows).
    order: z.enum(['attention']).optional(),
    offset: z.number().int().min(0).optional(),
    limit: z.number().int().min(1).optional(),
  }),
  'rollout.approve': rolloutId,
  'rollout.promote': rolloutId,
  'rollout.halt': z.strictObject({ id, reason: z.string().min(1).max(2000) }),
  'rollout.resume': rolloutId,
  'rollout.abort': z.strictObject({ id, policy: z.enum(['keep', 'revert']).default('keep') }),
  'experiment.create': z.strictObject({
    id: id.optional(),
    model: id,
    control: version,
    candidate: version,
    group: id,
    split: z.number().int().min(1).max(99).default(50),
    metrics: z.array(z.string().min(1).max(200)).min(1).max(8),
    minDurationMs: z
      .number()
      .int()
      .positive()
      .max(365 * 86_400_000)
      .optional(),
    minDevices: z.number().int().positive().optional(),
    alpha: z.number().positive().optional(),
  }),
  'experiment.ls': z.strictObject({}),
  'experiment.status': rolloutId,
  'experiment.compare': rolloutId,
  'experiment.promote': z.strictObject({
    id,
    waves: z.union([z.string().min(1).max(2000), z.array(z.unknown()).max(100)]).optional(),
    maxFailureRate: z.number().optional(),
    channel: id.optional(),
    moveChannel: z.boolean().optional(),
    yes: z.boolean().optional(),
    force: z.boolean().optional(),
    analysis: z.unknown().optional(),
  }),
  'experiment.stop': z.strictObject({ id, revert: z.boolean().default(false) }),
  'audit.ls': z.strictObject({
    rolloutId: id.optional(),
    afterSeq: z.number().int().min(0).optional(),
    limit: z.number().int().min(1).max(1000).optional(),
    newest: z.boolean().optional(),
  }),
  'audit.verify': z.strictObject({}),
  'audit.export': z.strictObject({
    afterSeq: z.number().int().min(0).optional(),
    limit: z.number().int().min(1).max(1000).optional(),
  }),
  'metrics.query': MetricsQueryArgsSchema,
  'operator.add': z.strictObject({ name: id, role: z.enum(['admin', 'operator', 'viewer']) }),
  'operator.ls': z.strictObject({}),
  'operator.rm': z.strictObject({ name: id }),
  'operator.role': z.strictObject({ name: id, role: z.enum(['admin', 'operator', 'viewer']) }),
  'operator.whoami': z.strictObject({}),
} satisfies Record<Op, z.ZodType>;

type Args<O extends Op> = z.infer<(typeof ARGS)[O]>;
type Handler<O extends Op> = (args: Args<O>, ctx: CommandContext) => unknown;

export function parseArgs<O extends Op>(op: O, args: unknown): Args<O> {
  const parsed = ARGS[op].safeParse(args ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `argument ${issue.path.join('.')}` : 'arguments';
    throw new OtaError('E_USAGE', `${op}: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data as Args<O>;
}

export const HANDLERS: { [O in Op]: Handler<O> } = {
  'key.add': (a, c) => keyView(c.fleet.addKey({ key: a.key, name: a.name }, c.actor)),
  'key.ls': (_a, c) => c.fleet.listKeys().map(({ status, ...k }) => ({ ...keyView(k), status })),
  'key.revoke': (a, c) => {
    const { keyId, revoked, affected } = c.fleet.revokeKey(a.keyId, c.actor);
    return { id: keyId, revoked, affected };
  },
  'trust.publish': (a, c) => c.fleet.publishTrust(a.envelope, c.actor),
  'trust.show': (_a, c) => c.fleet.trustView(),
  'device.add': (a, c) => c.fleet.addDevice({ id: a.id, labels: a.labels, channel: a.channel }, c.actor),
  // Each device's models from memory, the rest from a narrow read: the whole records took twice
  // as long on the coordinator's thread (npm run bench:device-list).
  'device.ls': (a, c) =>
    c.store.listDeviceSummaries({ after: a.after, limit: a.limit }).map((d) => deviceRow(d, c.lastModels(d.id))),
  // One pass over the fleet: the summaries streamed from the store, the models from memory.
  'device.find': (a, c) =>
    findDevices(
      c.store.eachDeviceSummary(),
      c.lastModels,
      { text: a.text ?? '', state: a.state ?? '', model: a.model ?? '', version: a.version ?? '' },
      { offset: a.offset ?? 0, limit: a.limit ?? DEFAULT_FIND_LIMIT },
    ),
  'device.show': (a, c) => c.fleet.showDevice(a.id),
  'device.rm': (a, c) => c.fleet.removeDevice(a.id, c.actor),
  'group.create': (a, c) =>
    groupView(c.fleet.createGroup({ name: a.name, devices: a.devices, selector: a.selector }, c.actor)),
  'group.ls': (_a, c) => c.store.listGroups().map(groupView),
  'release.publish': async (a, c) => {
    const manifest = JSON.parse(a.envelope.manifest) as { sha256?: string };
    const size = typeof manifest.sha256 === 'string' ? await c.artifactSize(manifest.sha256) : null;
    if (size === null) {
      throw new OtaError(
        'E_NOT_FOUND',
        'the artifact of this release is not on the coordinator: upload it with the envelope (`otactl release publish` does, over HTTP POST /releases)',
      );
    }
    return c.fleet.publishRelease(
      {
        envelope: a.envelope,
        sha256: manifest.sha256 as string,
        size,
        channel: a.channel ?? null,
        yes: a.yes === true,
      },
      c.actor,
    );
  },
  'release.ls': (a, c) => c.fleet.listReleases(a.model),
  'channel.set': (a, c) => c.fleet.setChannel(a, c.actor),
  'channel.ls': (_a, c) => c.store.listChannels().map(channelView),
  'rollout.create': (a, c) =>
    c.rollouts.create(
      {
        id: a.id,
        model: a.model,
        version: a.version,
        target: { group: a.group, devices: a.devices, selector: a.selector },
        strategy: {
          waves: typeof a.waves === 'string' ? parseWaves(a.waves) : a.waves,
          maxFailureRate: a.maxFailureRate ?? 0,
          ...(a.analysis !== undefined ? { analysis: a.analysis } : {}),
        },
        channel: a.channel,
      },
      c.actor,
    ),
  'rollout.ls': (_a, c) => c.store.listRollouts().map((r) => c.rollouts.summary(r.id)),
  'rollout.status': (a, c) =>
    c.rollouts.status(a.id, { wave: a.wave, state: a.state, order: a.order, offset: a.offset, limit: a.limit }),
  'rollout.approve': (a, c) => c.rollouts.act(a.id, { type: 'approve', actor: c.actor }),
  'rollout.promote': (a, c) => c.rollouts.act(a.id, { type: 'promote', actor: c.actor }),
  'rollout.halt': (a, c) => c.rollouts.act(a.id, { type: 'halt', actor: c.actor, reason: a.reason }),
  'rollout.resume': (a, c) => c.rollouts.act(a.id, { type: 'resume', actor: c.actor }),
  'rollout.abort': (a, c) => c.rollouts.act(a.id, { type: 'abort', actor: c.actor, policy: a.policy }),
  'experiment.create': (a, c) => c.experiments.create(a, c.actor),
  'experiment.ls': (_a, c) => c.experiments.list(),
  'experiment.status': (a, c) => c.experiments.status(a.id),
  'experiment.compare': (a, c) => c.experiments.compare(a.id),
  'experiment.promote': (a, c) =>
    c.experiments.promote(
      a.id,
      {
        waves: typeof a.waves === 'string' ? parseWaves(a.waves) : a.waves,
        maxFailureRate: a.maxFailureRate,
        channel: a.channel,
        moveChannel: a.moveChannel,
        yes: a.yes,
        force: a.force,
        analysis: a.analysis,
      },
      c.actor,
    ),
  'experiment.stop': (a, c) => c.experiments.stop(a.id, a.revert, c.actor),
  'audit.ls': (a, c) =>
    c.store.listAudit({
      rolloutId: a.rolloutId,
      afterSeq: a.afterSeq,
      limit: a.limit ?? 100,
      newest: a.newest === true,
    }),
  'audit.verify': (_a, c) => c.store.verifyAudit(),
  'audit.export': (a, c) => {
    const limit = a.limit ?? 1000;
    const events = c.store.listAudit({ afterSeq: a.afterSeq ?? 0, limit });
    // The whole chain is verified once, with the last page (not once per page).
    return { events, verdict: events.length < limit ? c.store.verifyAudit() : null };
  },
  'metrics.query': (a, c) => c.metrics.query(a),
  'operator.add': async (a, c) => {
    const { name, role, token }: { name: string; role: Role; token: string } = await c.fleet.addOperator(
      a.name,
      a.role,
      c.actor,
    );
    return { id: name, role, token };
  },
  'operator.ls': (_a, c) => c.store.listOperators().map(operatorView),
  'operator.rm': async (a, c) => {
    const { name, removed } = await c.fleet.removeOperator(a.name, c.actor);
    return { id: name, removed };
  },
  'operator.role': (a, c) => {
    const { name, role } = c.fleet.setOperatorRole(a.name, a.role, c.actor);
    return { id: name, role };
  },
  'operator.whoami': (_a, c) => ({ id: c.actor, role: c.role, ops: opsFor(c.role) }),
};
