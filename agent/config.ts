import { closeSync, fstatSync, lstatSync, openSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { OtaError } from '../shared/errors.js';
import { DEVICE_SECRET_RULE, type SecretFileRule, secretFileError } from '../shared/file-permissions.js';
import { type PublicKey, PublicKeyJsonSchema, publicKeyFromJson } from '../shared/keys.js';
import { MAX_VALUE_NAMES, VALUE_NAME_PATTERN } from '../shared/metrics/limits.js';
import { ID_PATTERN } from '../shared/names.js';
import { DEFAULT_PREFIX } from '../shared/topics.js';

/**
 * The agent configuration (`/etc/ota-agent/config.json`, or `--config`). The file
 * `otactl device add --agent-config` writes is valid as it is. Environment variables override
 * single keys (listed in ENV_OVERRIDES); every error names the key and, for env, the variable.
 */

export const DEFAULT_CONFIG_FILE = '/etc/ota-agent/config.json';
export const DEFAULT_STATE_DIR = '/var/lib/ota-agent';
/** sun_path is 108 bytes on Linux, with the terminating NUL (unix(7)). */
export const MAX_SOCKET_PATH_BYTES = 107;

const absolutePath = z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path');

const ProgramSchema = z.strictObject({
  path: absolutePath,
  argv: z.array(z.string()).max(32).default([]),
});

export const AgentConfigSchema = z.strictObject({
  deviceId: z.string().regex(ID_PATTERN, 'must be 1-64 letters, digits, ".", "_", "-"'),
  broker: z.strictObject({
    url: z
      .string()
      .refine((u) => /^(mqtts?|wss?):\/\/[^/]/.test(u), 'must be an mqtt://, mqtts://, ws:// or wss:// URL'),
    /** CA certificate file for mqtts/wss/https (PEM). */
    caFile: absolutePath.optional(),
    topicPrefix: z.string().default(DEFAULT_PREFIX),
    /**
     * MQTT keepalive in seconds (MQTT 3.1.1 section 3.1.2.10). The broker drops a connection
     * that stays silent for 1.5 times this (a device that lost power or network without a FIN),
     * and publishes its will: the device shows offline within that bound. Default 30.
     */
    keepaliveSeconds: z.number().int().min(1).max(3600).default(30),
  }),
  /** Base URL of the coordinator's HTTP server (artifacts are under /artifacts/sha256/<hex>). */
  artifactsUrl: z.string().refine((u) => /^https?:\/\/[^/]/.test(u), 'must be an http:// or https:// URL'),
  /**
   * The device token inline, or in a file named by tokenFile. Either file is refused when other
   * users may read it (mode 0600, or 0640 for the agent's group, are accepted).
   */
  token: z.string().min(1).optional(),
  tokenFile: absolutePath.optional(),
  coordinatorKey: PublicKeyJsonSchema,
  trustedKeys: z.array(PublicKeyJsonSchema).min(1, 'needs at least one trusted release key'),
  threshold: z.number().int().min(1).default(1),
  /**
   * The trust document version `trustedKeys` and `threshold` come from (docs/security.md): 0 for
   * the initial keys; `otactl device add --agent-config` writes the current one after a rotation,
   * so the device skips the documents before it.
   */
  trustVersion: z.number().int().min(0).default(0),
  stateDir: absolutePath.optional(),
  probe: z
    .strictObject({
      timeoutMs: z.number().int().min(100).default(30_000),
      attempts: z.number().int().min(1).max(10).default(1),
      initialDelayMs: z.number().int().min(0).default(0),
      latencyBudgetMs: z.number().int().min(1).optional(),
    })
    .default({ timeoutMs: 30_000, attempts: 1, initialDelayMs: 0 }),
  download: z
    .strictObject({
      maxBytes: z
        .number()
        .int()
        .min(1)
        .default(4 * 1024 ** 3),
      deadlineMs: z.number().int().min(1000).default(3_600_000),
      stallTimeoutMs: z.number().int().min(100).default(60_000),
      maxAttempts: z.number().int().min(1).max(100).default(5),
      backoffBaseMs: z.number().int().min(1).default(2_000),
      backoffMaxMs: z.number().int().min(1).default(300_000),
      /** Free space to leave on the state directory's filesystem after the download. */
      reserveMB: z.number().int().min(0).default(64),
    })
    .default({
      maxBytes: 4 * 1024 ** 3,
      deadlineMs: 3_600_000,
      stallTimeoutMs: 60_000,
      maxAttempts: 5,
      backoffBaseMs: 2_000,
      backoffMaxMs: 300_000,
      reserveMB: 64,
    }),
  /** Programs a reload action may run (absolute paths, exact match). */
  reloadAllowlist: z.array(absolutePath).default([]),
  /** Per model: what to run after the model was swapped in (and after a rollback). */
  reloadActions: z.record(z.string(), ProgramSchema).default({}),
  /** Programs an `exec` extra probe of a signed manifest may run (absolute paths, exact match). */
  execProbeAllowlist: z.array(absolutePath).default([]),
  /**
   * Device metrics (docs/metrics.md): applications report each inference on a local Unix socket;
   * the agent sends one summary per window. `socket` defaults to $RUNTIME_DIRECTORY/metrics.sock
   * under systemd (RuntimeDirectory=ota-agent: /run/ota-agent/metrics.sock), else
   * <stateDir>/metrics.sock. `values` declares the custom value names applications may report:
   * nothing else reaches the coordinator.
   */
  metrics: z
    .strictObject({
      enabled: z.boolean().default(true),
      socket: absolutePath
        .refine(
          (p) => Buffer.byteLength(p) <= MAX_SOCKET_PATH_BYTES,
          `a Unix socket path is at most ${MAX_SOCKET_PATH_BYTES} bytes`,
        )
        .optional(),
      windowSeconds: z.number().int().min(1).max(3600).default(60),
      /** Closed windows kept on disk while offline; older ones are merged into coarser windows beyond it. */
      maxPendingWindows: z.number().int().min(2).max(100_000).default(1440),
      values: z
        .array(z.string().regex(VALUE_NAME_PATTERN, 'must be 1-32 lowercase letters, digits, "_", from a letter'))
        .max(MAX_VALUE_NAMES)
        .refine((v) => new Set(v).size === v.length, 'names must differ')
        .default([]),
    })
    .default({ enabled: true, windowSeconds: 60, maxPendingWindows: 1440, values: [] }),
  /** Reports kept on disk while the broker is unreachable. */
  outboxLimit: z.number().int().min(1).max(100_000).default(1000),
  /** Agent starts tolerated within one update step before the update is stopped (loop guard). */
  maxStartsPerStep: z.number().int().min(1).max(100).default(3),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
});
export type AgentConfigFile = z.infer<typeof AgentConfigSchema>;

export interface AgentConfig
  extends Omit<AgentConfigFile, 'token' | 'tokenFile' | 'coordinatorKey' | 'trustedKeys' | 'metrics'> {
  token: string;
  stateDir: string;
  /** With `socket` resolved (see the schema). */
  metrics: AgentConfigFile['metrics'] & { socket: string };
  coordinatorKey: PublicKey;
  trustedKeys: PublicKey[];
  source: string;
}

/** Environment variables that override one key each. */
export const ENV_OVERRIDES: Record<string, (c: Record<string, unknown>, v: string) => void> = {
  OTA_AGENT_DEVICE_ID: (c, v) => {
    c.deviceId = v;
  },
  OTA_AGENT_BROKER_URL: (c, v) => {
    c.broker = { ...(c.broker as object), url: v };
  },
  OTA_AGENT_ARTIFACTS_URL: (c, v) => {
    c.artifactsUrl = v;
  },
  OTA_AGENT_TOKEN_FILE: (c, v) => {
    c.tokenFile = v;
    delete c.token;
  },
  OTA_AGENT_STATE_DIR: (c, v) => {
    c.stateDir = v;
  },
  OTA_AGENT_LOG_LEVEL: (c, v) => {
    c.logLevel = v;
  },
};

export interface LoadOptions {
  file: string;
  env: NodeJS.ProcessEnv;
  /** --state-dir, which wins over everything else. */
  stateDir?: string;
}

function configError(source: string, message: string): OtaError {
  return new OtaError('E_CONFIG', `${source}: ${message}`);
}

/** Reads `file` with the mode of what was read (fstat of the descriptor: a symlink's target). */
function readWithMode(file: string): { text: string; mode: number } {
  const fd = openSync(file, 'r');
  try {
    return { mode: fstatSync(fd).mode, text: readFileSync(fd, 'utf8') };
  } finally {
    closeSync(fd);
  }
}

/** Refuses a file other users may read (when it holds the token) or write; see DEVICE_SECRET_RULE. */
function checkMode(file: string, mode: number, rule: SecretFileRule, what: string): void {
  let target: string | undefined;
  try {
    if (lstatSync(file).isSymbolicLink()) target = realpathSync(file);
  } catch {
    // gone meanwhile: the mode read with it is what counts
  }
  const open = secretFileError(file, mode, rule, what, target);
  if (open) throw open;
}

/** Others may write no agent config (trusted keys, allowlists); read one only without the token. */
const CONFIG_WITHOUT_TOKEN_RULE: SecretFileRule = { ...DEVICE_SECRET_RULE, forbidden: 0o002 };

export function loadAgentConfig(options: LoadOptions): AgentConfig {
  const { file, env } = options;
  let read: { text: string; mode: number };
  try {
    read = readWithMode(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw configError(
        file,
        'no such file; pass --config FILE (written by `otactl device add ID --agent-config FILE`)',
      );
    }
    if (code === 'EACCES') throw configError(file, 'permission denied; the agent user must be able to read it');
    throw configError(file, `cannot read it (${code ?? (err as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(read.text);
  } catch (err) {
    throw configError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw configError(file, 'must be a JSON object');
  // Before anything else: a token others can read has leaked whatever the rest says. (Checked
  // on the file as written, also when OTA_AGENT_TOKEN_FILE overrides its "token".)
  const holdsToken = Object.hasOwn(raw, 'token');
  const what = holdsToken ? 'the agent config, with the device token' : 'the agent config';
  checkMode(file, read.mode, holdsToken ? DEVICE_SECRET_RULE : CONFIG_WITHOUT_TOKEN_RULE, what);
  const merged = structuredClone(raw) as Record<string, unknown>;
  const applied: string[] = [];
  for (const [name, apply] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value !== undefined && value !== '') {
      apply(merged, value);
      applied.push(name);
    }
  }
  const source = applied.length ? `${file} (with ${applied.join(', ')})` : file;
  const parsed = AgentConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = issue?.path.join('.') || '(root)';
    throw configError(source, `key "${key}": ${issue?.message}`);
  }
  const c = parsed.data;
  let token = c.token;
  if (c.token && c.tokenFile) throw configError(source, 'give "token" or "tokenFile", not both');
  if (c.tokenFile) {
    let tokenRead: { text: string; mode: number };
    try {
      tokenRead = readWithMode(c.tokenFile);
    } catch (err) {
      throw configError(source, `key "tokenFile": cannot read ${c.tokenFile} (${(err as NodeJS.ErrnoException).code})`);
    }
    checkMode(c.tokenFile, tokenRead.mode, DEVICE_SECRET_RULE, 'the device token file');
    token = tokenRead.text.trim();
  }
  if (!token) throw configError(source, 'key "token": missing; set "token" or "tokenFile"');
  if (c.threshold > c.trustedKeys.length) {
    throw configError(
      source,
      `key "threshold": ${c.threshold} is more than the ${c.trustedKeys.length} trusted key(s)`,
    );
  }
  for (const [model, action] of Object.entries(c.reloadActions)) {
    if (!c.reloadAllowlist.includes(action.path)) {
      throw configError(source, `key "reloadActions.${model}.path": ${action.path} is not in "reloadAllowlist"`);
    }
  }
  const keys = (list: unknown[], key: string) =>
    list.map((k, i) => {
      try {
        return publicKeyFromJson(k, `${key}[${i}]`);
      } catch (err) {
        throw configError(source, `key "${key}[${i}]": ${(err as Error).message}`);
      }
    });
  const stateDir = path.resolve(
    options.stateDir ?? c.stateDir ?? env.STATE_DIRECTORY?.split(':')[0] ?? DEFAULT_STATE_DIR,
  );
  const runtimeDir = env.RUNTIME_DIRECTORY?.split(':')[0];
  const socket = c.metrics.socket ?? path.join(runtimeDir ? path.resolve(runtimeDir) : stateDir, 'metrics.sock');
  return {
    ...c,
    token,
    stateDir,
    metrics: { ...c.metrics, socket },
    coordinatorKey: keys([c.coordinatorKey], 'coordinatorKey')[0] as PublicKey,
    trustedKeys: keys(c.trustedKeys, 'trustedKeys'),
    source,
  };
}
