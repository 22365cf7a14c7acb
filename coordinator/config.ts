import path from 'node:path';
import { z } from 'zod';
import { OtaError } from '../shared/errors.js';
import { DEFAULT_PREFIX } from '../shared/topics.js';

/**
 * `ota-coordinator` settings (design section 6): flags, then environment, then the embedded
 * defaults that need nothing installed. Every setting is listed with its default in
 * docs/coordinator.md.
 */
export const CoordinatorConfigSchema = z.strictObject({
  /** SQLite database, coordinator key, admin token and artifacts live here. */
  dataDir: z.string().min(1),
  /** Address both servers bind. 127.0.0.1 by default: expose it deliberately. */
  host: z.string().min(1),
  mqttPort: z.number().int().min(0).max(65535),
  httpPort: z.number().int().min(0).max(65535),
  tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }).nullable(),
  /** How devices reach the broker and the HTTP server (written into agent configs). */
  publicMqttUrl: z.string().url().nullable(),
  publicHttpUrl: z.string().url().nullable(),
  topicPrefix: z.string().min(1),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** Signatures from distinct trusted keys a release needs (also written into agent configs). */
  releaseThreshold: z.number().int().min(1).max(16),
  /** Largest artifact accepted by upload. */
  maxArtifactBytes: z.number().int().min(1),
  /**
   * After a start, how long a device that was online in an active rollout has to reconnect before
   * its rollout row says offline (so a device that died while the coordinator was down never holds
   * a wave open). Agents reconnect with backoff up to 60 s; default 90 s.
   */
  reconnectGraceMs: z.number().int().min(0).max(86_400_000).default(90_000),
  /** Days of device metrics summaries and rollups kept in metrics.db (docs/metrics.md). */
  metricsRetentionDays: z.number().positive().max(366).default(14),
  /**
   * Days of raw metrics windows kept (at most metricsRetentionDays; default the same). They are
   * nearly all of metrics.db's bytes; only `--devices` queries read them.
   */
  metricsRawRetentionDays: z.number().positive().max(366).nullable().default(null),
  /**
   * An external MQTT broker (design section 12) in place of the embedded one: the coordinator is
   * its client. Null: the embedded broker.
   */
  broker: z
    .strictObject({
      url: z.string().regex(/^mqtts?:\/\/[^/]+/, 'must be an mqtt:// or mqtts:// URL'),
      username: z.string().min(1),
      passwordFile: z.string().min(1),
      caFile: z.string().min(1).nullable(),
      /**
       * Who keeps the broker's clients: `mosquitto` (the coordinator, through Mosquitto 2's dynamic
       * security plugin) or `none` (the broker's operator, e.g. for EMQX: docs/brokers-other.md).
       */
      identity: z.enum(['mosquitto', 'none']),
    })
    .nullable()
    .default(null),
  /** Where devices download artifacts (an HTTP origin or CDN serving /artifacts/sha256/<hex>); null: the coordinator. */
  artifactsUrl: z
    .string()
    .regex(/^https?:\/\/[^/]+/, 'must be an http:// or https:// URL')
    .nullable()
    .default(null),
});
export type CoordinatorConfig = z.infer<typeof CoordinatorConfigSchema>;

export interface CoordinatorFlags {
  data?: string;
  host?: string;
  mqttPort?: string | number;
  httpPort?: string | number;
  tlsCert?: string;
  tlsKey?: string;
  publicMqttUrl?: string;
  publicHttpUrl?: string;
  logLevel?: string;
  broker?: string;
  brokerUser?: string;
  brokerPasswordFile?: string;
  brokerCa?: string;
  brokerIdentity?: string;
  artifactsUrl?: string;
}

const ENV = {
  data: 'OTA_DATA',
  host: 'OTA_HOST',
  mqttPort: 'OTA_MQTT_PORT',
  httpPort: 'OTA_HTTP_PORT',
  tlsCert: 'OTA_TLS_CERT',
  tlsKey: 'OTA_TLS_KEY',
  publicMqttUrl: 'OTA_PUBLIC_MQTT_URL',
  publicHttpUrl: 'OTA_PUBLIC_HTTP_URL',
  logLevel: 'OTA_LOG_LEVEL',
  broker: 'OTA_BROKER_URL',
  brokerUser: 'OTA_BROKER_USER',
  brokerPasswordFile: 'OTA_BROKER_PASSWORD_FILE',
  brokerCa: 'OTA_BROKER_CA',
  brokerIdentity: 'OTA_BROKER_IDENTITY',
  artifactsUrl: 'OTA_ARTIFACTS_URL',
} as const;

function port(value: string | number | undefined, fallback: number, name: string): number {
  if (value === undefined || value === '') return fallback;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new OtaError('E_CONFIG', `${name}: ${JSON.stringify(value)} is not a port number (0-65535)`);
  }
  return n;
}

export function resolveCoordinatorConfig(flags: CoordinatorFlags, env: NodeJS.ProcessEnv): CoordinatorConfig {
  const pick = <K extends keyof typeof ENV>(k: K): string | undefined => {
    const v = flags[k] ?? env[ENV[k]];
    return v === undefined || v === '' ? undefined : String(v);
  };
  // Under systemd (StateDirectory=) the data lives in $STATE_DIRECTORY.
  const dataDir = path.resolve(pick('data') ?? env.STATE_DIRECTORY ?? '.ota-data');
  const cert = pick('tlsCert');
  const key = pick('tlsKey');
  if (Boolean(cert) !== Boolean(key)) {
    throw new OtaError('E_CONFIG', '--tls-cert and --tls-key go together: give both (PEM files) or neither');
  }
  const brokerUrl = pick('broker');
  const brokerPasswordFile = pick('brokerPasswordFile');
  if (!brokerUrl && (pick('brokerUser') || brokerPasswordFile || pick('brokerCa') || pick('brokerIdentity'))) {
    throw new OtaError(
      'E_CONFIG',
      '--broker-user, --broker-password-file, --broker-ca and --broker-identity go with --broker <mqtt(s)://host:port>: give --broker too, or drop them to use the embedded broker',
    );
  }
  const identity = pick('brokerIdentity') ?? 'mosquitto';
  if (identity !== 'mosquitto' && identity !== 'none') {
    throw new OtaError(
      'E_CONFIG',
      `--broker-identity: ${JSON.stringify(identity)} is not one of mosquitto (the coordinator manages Mosquitto 2's dynamic security plugin) or none (you manage the broker's clients)`,
    );
  }
  if (brokerUrl && !brokerPasswordFile) {
    throw new OtaError(
      'E_CONFIG',
      "--broker needs --broker-password-file (env OTA_BROKER_PASSWORD_FILE): the file with the coordinator's broker password (ota-coordinator mosquitto-config writes coordinator.password)",
    );
  }
  const broker =
    brokerUrl && brokerPasswordFile
      ? {
          url: brokerUrl,
          username: pick('brokerUser') ?? 'ota-coordinator',
          passwordFile: path.resolve(brokerPasswordFile),
          caFile: pick('brokerCa') ? path.resolve(pick('brokerCa') as string) : null,
          identity: identity as 'mosquitto' | 'none',
        }
      : null;
  const raw = {
    broker,
    artifactsUrl: pick('artifactsUrl') ?? null,
    dataDir,
    host: pick('host') ?? '127.0.0.1',
    mqttPort: port(pick('mqttPort'), 1883, '--mqtt-port'),
    httpPort: port(pick('httpPort'), 8080, '--http-port'),
    tls: cert && key ? { certFile: path.resolve(cert), keyFile: path.resolve(key) } : null,
    publicMqttUrl: pick('publicMqttUrl') ?? null,
    publicHttpUrl: pick('publicHttpUrl') ?? null,
    topicPrefix: env.OTA_TOPIC_PREFIX || DEFAULT_PREFIX,
    logLevel: pick('logLevel') ?? 'info',
    releaseThreshold: env.OTA_RELEASE_THRESHOLD ? Number(env.OTA_RELEASE_THRESHOLD) : 1,
    maxArtifactBytes: env.OTA_MAX_ARTIFACT_BYTES ? Number(env.OTA_MAX_ARTIFACT_BYTES) : 4 * 1024 ** 3,
    reconnectGraceMs: env.OTA_RECONNECT_GRACE_MS ? Number(env.OTA_RECONNECT_GRACE_MS) : 90_000,
    metricsRetentionDays: env.OTA_METRICS_RETENTION_DAYS ? Number(env.OTA_METRICS_RETENTION_DAYS) : 14,
    metricsRawRetentionDays: env.OTA_METRICS_RAW_RETENTION_DAYS ? Number(env.OTA_METRICS_RAW_RETENTION_DAYS) : null,
  };
  const parsed = CoordinatorConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new OtaError('E_CONFIG', `${issue?.path.join('.') || 'config'}: ${issue?.message ?? 'invalid'}`);
  }
  const { metricsRetentionDays: days, metricsRawRetentionDays: rawDays } = parsed.data;
  if (rawDays !== null && rawDays > days) {
    throw new OtaError(
      'E_CONFIG',
      `OTA_METRICS_RAW_RETENTION_DAYS (${rawDays}) is more than OTA_METRICS_RETENTION_DAYS (${days}): raw windows are kept at most as long as the rollups; lower it or raise the retention`,
    );
  }
  return parsed.data;
}
