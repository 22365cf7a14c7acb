import { promises as fs } from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { OtaError } from '../../shared/errors.js';
import { createTopics, type Topics } from '../../shared/topics.js';
import type { CommandClient, CommandClientOptions } from '../client/command-client.js';
import { untrustedCertificateCode } from '../client/tls-trust.js';
import { isOp, OPS } from '../commands/ops.js';
import { ADMIN_TOKEN_FILE, type AdminTokenFile } from '../identity/bootstrap.js';
import type { CliIo } from './io.js';
import { positiveInt } from './options.js';

/**
 * How otactl finds and reaches the coordinator (design section 7). Each setting is taken from
 * the first of: the command's own flag, the same flag before the command (`otactl --url U
 * device ls`), the environment, the token file (`--token-file`, when it is an admin.token
 * JSON), then the local coordinator's admin token file (`$OTA_DATA/admin.token`, else
 * `./.ota-data/admin.token`).
 */

export interface ConnectionFlags {
  url?: string;
  httpUrl?: string;
  user?: string;
  tokenFile?: string;
  ca?: string;
  timeout?: number;
}

export interface Connection {
  /** mqtt://, mqtts://, ws:// or wss:// URL of the coordinator's broker. */
  url: string;
  /** http(s):// URL of the coordinator's HTTP server (release upload). */
  httpUrl: string;
  user: string;
  token: string;
  ca?: Buffer;
  timeoutMs?: number;
  topicPrefix?: string;
  /** Where each setting came from, named in error messages (`ca`: the file and its flag, when given). */
  from: { url: string; httpUrl: string; user: string; token: string; ca?: string };
}

const KEYS = ['url', 'httpUrl', 'user', 'tokenFile', 'ca', 'timeout'] as const;

export function brokerUrl(value: string): string {
  if (!/^(mqtts?|wss?):\/\/[^/]/.test(value)) {
    throw new InvalidArgumentError('expected an mqtt://, mqtts://, ws:// or wss:// URL, e.g. mqtt://127.0.0.1:1883');
  }
  return value;
}

export function httpUrl(value: string): string {
  if (!/^https?:\/\/[^/]/.test(value)) {
    throw new InvalidArgumentError('expected an http:// or https:// URL, e.g. http://127.0.0.1:8080');
  }
  return value;
}

/** The connection flags; on the program (before the command) and on every command that talks to the coordinator. */
export function addConnectionOptions(cmd: Command): Command {
  const group = 'Connection (also accepted before the command):';
  const options = [
    new Option('--url <url>', 'broker URL: mqtt[s]://HOST:PORT or ws[s]://HOST:PORT/mqtt (env OTA_URL)').argParser(
      brokerUrl,
    ),
    new Option('--http-url <url>', 'HTTP URL for uploads (env OTA_HTTP_URL; default derived from --url)').argParser(
      httpUrl,
    ),
    new Option('--user <name>', 'operator name (env OTA_USER)'),
    new Option(
      '--token-file <file>',
      "file holding the operator's token, or an admin.token (env OTA_TOKEN: the token)",
    ),
    new Option('--ca <file>', 'CA certificate (PEM) for mqtts, wss and https (env OTA_CA)'),
    new Option('--timeout <ms>', 'how long to wait for each reply (default 30000)').argParser(positiveInt),
  ];
  for (const o of options) cmd.addOption(o.helpGroup(group));
  return cmd;
}

/** Connection flags given on the command and on its parents; the nearest wins. */
export function connectionFlags(command: Command): ConnectionFlags {
  const chain: Command[] = [];
  for (let c: Command | null = command; c; c = c.parent) chain.unshift(c);
  const flags: Record<string, unknown> = {};
  for (const c of chain) {
    const opts = c.opts() as Record<string, unknown>;
    for (const k of KEYS) if (opts[k] !== undefined) flags[k] = opts[k];
  }
  return flags as ConnectionFlags;
}

interface TokenFileContent {
  token: string;
  user?: string;
  mqttUrl?: string;
  httpUrl?: string;
}

async function readTokenFile(file: string): Promise<TokenFileContent> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new OtaError('E_IO', `cannot read the token file ${file}: ${(err as Error).message}`);
  }
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    let json: Partial<AdminTokenFile>;
    try {
      json = JSON.parse(trimmed) as Partial<AdminTokenFile>;
    } catch {
      throw new OtaError(
        'E_CONFIG',
        `${file} starts like JSON but is not: give a file holding the token, or an admin.token`,
      );
    }
    if (typeof json.token !== 'string' || json.token === '') {
      throw new OtaError('E_CONFIG', `${file} has no "token": give a file holding the token, or an admin.token`);
    }
    return {
      token: json.token,
      ...(typeof json.user === 'string' ? { user: json.user } : {}),
      ...(typeof json.mqttUrl === 'string' ? { mqttUrl: json.mqttUrl } : {}),
      ...(typeof json.httpUrl === 'string' ? { httpUrl: json.httpUrl } : {}),
    };
  }
  if (trimmed === '' || /\s/.test(trimmed)) {
    throw new OtaError('E_CONFIG', `${file} does not hold a token (one line, no spaces)`);
  }
  return { token: trimmed };
}

/** The admin token file of a coordinator on this host, or null (with why, when it exists but cannot be read). */
async function readAdminTokenFile(file: string): Promise<{ content: TokenFileContent | null; problem: string | null }> {
  try {
    await fs.access(file);
  } catch {
    return { content: null, problem: null };
  }
  try {
    return { content: await readTokenFile(file), problem: null };
  } catch (err) {
    return { content: null, problem: (err as Error).message };
  }
}

/** http(s) URL of the coordinator's HTTP server next to a broker URL: same host, port 8080 (ws: the same port). */
export function deriveHttpUrl(url: string): string {
  const u = new URL(url);
  const secure = u.protocol === 'mqtts:' || u.protocol === 'wss:';
  const ws = u.protocol === 'ws:' || u.protocol === 'wss:';
  const port = ws ? u.port : '8080';
  return `${secure ? 'https' : 'http'}://${u.hostname.includes(':') && !u.hostname.startsWith('[') ? `[${u.hostname}]` : u.hostname}${port ? `:${port}` : ''}`;
}

const NOTHING_FOUND = (dataFile: string) =>
  `pass --url mqtt://HOST:1883 --user NAME --token-file FILE (or set OTA_URL, OTA_USER, OTA_TOKEN), or run otactl where the coordinator keeps its data (${dataFile}; set OTA_DATA to the coordinator's --data directory)`;

export async function resolveConnection(flags: ConnectionFlags, io: Pick<CliIo, 'env' | 'cwd'>): Promise<Connection> {
  const env = (name: string): string | undefined => {
    const v = io.env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  const dataDir = env('OTA_DATA');
  const adminFile = path.resolve(io.cwd, dataDir ?? '.ota-data', ADMIN_TOKEN_FILE);

  let tokenFile: TokenFileContent | null = null;
  if (flags.tokenFile) tokenFile = await readTokenFile(path.resolve(io.cwd, flags.tokenFile));

  const envToken = env('OTA_TOKEN');
  const envUrl = env('OTA_URL');
  if (envUrl !== undefined && !/^(mqtts?|wss?):\/\/[^/]/.test(envUrl)) {
    throw new OtaError('E_CONFIG', `OTA_URL=${envUrl} is not an mqtt://, mqtts://, ws:// or wss:// URL`);
  }
  const envHttpUrl = env('OTA_HTTP_URL');
  if (envHttpUrl !== undefined && !/^https?:\/\/[^/]/.test(envHttpUrl)) {
    throw new OtaError('E_CONFIG', `OTA_HTTP_URL=${envHttpUrl} is not an http:// or https:// URL`);
  }

  // The local admin token only fills what nothing else gave.
  const needAdmin = !(tokenFile || envToken) || !(flags.url ?? envUrl ?? tokenFile?.mqttUrl);
  const admin = needAdmin ? await readAdminTokenFile(adminFile) : { content: null, problem: null };
  const adminFrom = `the admin token file ${adminFile}`;

  // The token and the user it belongs to come from the same place.
  let token: string;
  let tokenFrom: string;
  let fileUser: string | undefined;
  if (tokenFile) {
    token = tokenFile.token;
    tokenFrom = `--token-file ${flags.tokenFile}`;
    fileUser = tokenFile.user;
  } else if (envToken) {
    token = envToken;
    tokenFrom = 'OTA_TOKEN';
  } else if (admin.content) {
    token = admin.content.token;
    tokenFrom = adminFrom;
    fileUser = admin.content.user;
  } else {
    const why = admin.problem ? ` (${admin.problem})` : '';
    throw new OtaError('E_CONFIG', `no token to connect with${why}: ${NOTHING_FOUND(adminFile)}`);
  }

  let user: string;
  let userFrom: string;
  if (flags.user) [user, userFrom] = [flags.user, '--user'];
  else if (env('OTA_USER')) [user, userFrom] = [env('OTA_USER') as string, 'OTA_USER'];
  else if (fileUser) [user, userFrom] = [fileUser, tokenFrom];
  else {
    throw new OtaError('E_CONFIG', `no user name for the token from ${tokenFrom}: pass --user NAME or set OTA_USER`);
  }

  const fileUrls = tokenFile?.mqttUrl ? tokenFile : admin.content;
  let url: string;
  let urlFrom: string;
  if (flags.url) [url, urlFrom] = [flags.url, '--url'];
  else if (envUrl) [url, urlFrom] = [envUrl, 'OTA_URL'];
  else if (fileUrls?.mqttUrl) [url, urlFrom] = [fileUrls.mqttUrl, fileUrls === tokenFile ? tokenFrom : adminFrom];
  else {
    throw new OtaError('E_CONFIG', `no coordinator URL: ${NOTHING_FOUND(adminFile)}`);
  }
  if (!/^(mqtts?|wss?):\/\/[^/]/.test(url)) {
    throw new OtaError('E_CONFIG', `${urlFrom} gives ${url}, not an mqtt://, mqtts://, ws:// or wss:// URL`);
  }

  let http: string;
  let httpFrom: string;
  if (flags.httpUrl) [http, httpFrom] = [flags.httpUrl, '--http-url'];
  else if (envHttpUrl) [http, httpFrom] = [envHttpUrl, 'OTA_HTTP_URL'];
  else if (fileUrls?.httpUrl && fileUrls.mqttUrl === url) {
    [http, httpFrom] = [fileUrls.httpUrl, fileUrls === tokenFile ? tokenFrom : adminFrom];
  } else [http, httpFrom] = [deriveHttpUrl(url), `derived from ${url}`];

  const caFile = flags.ca ?? env('OTA_CA');
  const caFrom = caFile ? `${caFile} (${flags.ca ? '--ca' : 'OTA_CA'})` : undefined;
  let ca: Buffer | undefined;
  if (caFile) {
    ca = await fs.readFile(path.resolve(io.cwd, caFile)).catch((err: Error) => {
      throw new OtaError('E_IO', `cannot read the CA certificate ${caFile}: ${err.message}`);
    });
  }
  const topicPrefix = env('OTA_TOPIC_PREFIX');
  return {
    url,
    httpUrl: http,
    user,
    token,
    ...(ca ? { ca } : {}),
    ...(flags.timeout ? { timeoutMs: flags.timeout } : {}),
    ...(topicPrefix ? { topicPrefix } : {}),
    from: { url: urlFrom, httpUrl: httpFrom, user: userFrom, token: tokenFrom, ...(caFrom ? { ca: caFrom } : {}) },
  };
}

/**
 * A TLS trust failure said with its fix. The coordinator's certificate is self-signed or from a
 * private CA (docs/security.md): otactl trusts it only when given that CA with --ca.
 */
export function untrustedError(url: string, code: string, conn: Pick<Connection, 'from'>, cause?: unknown): OtaError {
  const given = conn.from.ca
    ? `the CA certificate ${conn.from.ca} did not sign it`
    : 'otactl was given no CA certificate';
  return new OtaError(
    'E_CONNECT',
    `the coordinator at ${url} presented a certificate otactl does not trust (${code}: self-signed, or from a CA otactl was not given); ${given}: pass the CA certificate that signed the coordinator's certificate (for a self-signed one, the certificate itself) with --ca FILE or OTA_CA=FILE`,
    { cause },
  );
}

/** Adds to a connection error where the URL and token came from, and what to check. */
export function explainConnectError(err: unknown, conn: Connection): unknown {
  if (!(err instanceof OtaError)) return err;
  const untrusted = untrustedCertificateCode(err);
  if (untrusted) return untrustedError(conn.url, untrusted, conn, err);
  if (err.code === 'E_CONNECT') {
    return new OtaError(
      'E_CONNECT',
      `${err.message}; is ota-coordinator running, and is ${conn.url} its MQTT address? (the URL is from ${conn.from.url}; set it with --url or OTA_URL)`,
      { cause: err },
    );
  }
  if (err.code === 'E_AUTH' && /\(not authorized\)/.test(err.message)) {
    // CONNACK 5: the token was right; the client id, a will or a session in use was not.
    return new OtaError('E_AUTH', `${err.message} (user from ${conn.from.user})`, { cause: err });
  }
  if (err.code === 'E_AUTH') {
    return new OtaError(
      'E_AUTH',
      `the coordinator at ${conn.url} refused user ${conn.user} (from ${conn.from.user}) with the token from ${conn.from.token}: wrong token or unknown user; use the token \`otactl operator add\` printed, or the admin token file`,
      { cause: err },
    );
  }
  return err;
}

/**
 * One connection to the coordinator for one otactl command. MQTT 3.1.1 has no way to refuse a
 * publish: the broker closes the connection instead (a command the account's role may not call).
 * A close while a reply is awaited therefore fails the call at once, and says which it was: the
 * coordinator still accepts a connection (so it refused the request) or it is gone.
 */
export class Session {
  private ending = false;
  private reachableAfterClose: Promise<boolean> | null = null;
  private readonly closeListeners = new Set<() => void>();

  private constructor(
    readonly client: CommandClient,
    readonly conn: Connection,
    readonly topics: Topics,
  ) {
    // Errors after connecting end in 'close', handled below; without a listener they would throw.
    client.mqtt.on('error', () => {});
    client.mqtt.on('close', () => this.markClosed());
  }

  /** The connection is gone (once): find out why, and fail everything that waits on it. */
  private markClosed(): void {
    if (this.ending || this.reachableAfterClose) return;
    this.reachableAfterClose = this.stillReachable();
    for (const l of [...this.closeListeners]) l();
  }

  static async open(conn: Connection): Promise<Session> {
    let client: CommandClient;
    try {
      client = await connectClient({
        url: conn.url,
        user: conn.user,
        token: conn.token,
        ...(conn.ca ? { ca: conn.ca } : {}),
        ...(conn.timeoutMs ? { timeoutMs: conn.timeoutMs } : {}),
        ...(conn.topicPrefix ? { topicPrefix: conn.topicPrefix } : {}),
      });
    } catch (err) {
      throw explainConnectError(err, conn);
    }
    return new Session(client, conn, createTopics(conn.topicPrefix));
  }

  /** Whether the coordinator still takes a connection: then the close was a refusal. */
  private async stillReachable(): Promise<boolean> {
    try {
      const probe = await connectClient({
        url: this.conn.url,
        user: this.conn.user,
        token: this.conn.token,
        connectTimeoutMs: 3_000,
        ...(this.conn.ca ? { ca: this.conn.ca } : {}),
        ...(this.conn.topicPrefix ? { topicPrefix: this.conn.topicPrefix } : {}),
      });
      await Promise.race([probe.close(), sleep(1_000)]);
      return true;
    } catch {
      return false;
    }
  }

  private async closedError(what: string, op: string | null): Promise<OtaError> {
    const reachable = await (this.reachableAfterClose ?? Promise.resolve(true));
    // Every account may call viewer operations: for those a close is never a refusal.
    const refusable = op !== null && !(isOp(op) && OPS[op] === 'viewer');
    if (reachable && op !== null && refusable) {
      const role = isOp(op) ? `${op} needs the ${OPS[op]} role` : `${op} may need another role`;
      return new OtaError(
        'E_FORBIDDEN',
        `the coordinator refused ${op}: it closed the connection instead of answering, which is how the broker refuses a command the account's role does not allow (MQTT 3.1.1 cannot say why). ${role}, and the role of ${this.conn.user} may not allow it: ask an admin, or use an account with that role (--user/--token-file)`,
      );
    }
    return new OtaError(
      'E_CONNECT',
      `the connection to the coordinator at ${this.conn.url} closed ${what}: is ota-coordinator still running? Check its log, then try again`,
    );
  }

  /** Resolves (with the error to report) when the connection closes unexpectedly. */
  closed(what: string, op: string | null = null): Promise<OtaError> {
    return new Promise((resolve) => {
      const fire = () => {
        this.closeListeners.delete(fire);
        void this.closedError(what, op).then(resolve);
      };
      if (this.reachableAfterClose) fire();
      else this.closeListeners.add(fire);
    });
  }

  async call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const what = `while waiting for the reply to ${op}`;
    if (this.reachableAfterClose) throw await this.closedError(what, op);
    let stop = () => {};
    const onClose = new Promise<never>((_, reject) => {
      const fire = () => {
        this.closeListeners.delete(fire);
        void this.closedError(what, op).then(reject);
      };
      this.closeListeners.add(fire);
      stop = () => this.closeListeners.delete(fire);
    });
    const reply = this.client.call<T>(op, args).catch(async (err: unknown) => {
      // A failed send may be reported just before the close itself: give the close a moment.
      if (err instanceof OtaError && err.code === 'E_CONNECT') {
        for (let i = 0; i < 20 && !this.reachableAfterClose && this.client.mqtt.connected; i++) await sleep(25);
        if (this.reachableAfterClose || !this.client.mqtt.connected) {
          this.markClosed();
          throw await this.closedError(what, op);
        }
      }
      throw err;
    });
    try {
      return await Promise.race([reply, onClose]);
    } finally {
      stop();
    }
  }

  /** Subscribes to one topic; `onMessage` gets its payloads (retained first). */
  async subscribe(topic: string, onMessage: (payload: Buffer) => void): Promise<void> {
    this.client.mqtt.on('message', (t, payload) => {
      if (t === topic) onMessage(payload);
    });
    const granted = await this.client.mqtt.subscribeAsync(topic, { qos: 1 });
    if (granted[0]?.qos === 128) {
      throw new OtaError('E_FORBIDDEN', `the coordinator refused the subscription to ${topic} for ${this.conn.user}`);
    }
  }

  async close(): Promise<void> {
    this.ending = true;
    this.closeListeners.clear();
    await Promise.race([this.client.close().catch(() => {}), sleep(1_000)]);
  }
}

/** The MQTT client is loaded on first use: offline commands (keygen, release sign) start faster. */
async function connectClient(options: CommandClientOptions): Promise<CommandClient> {
  const { CommandClient } = await import('../client/command-client.js');
  return CommandClient.connect(options);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Resolves the connection of `command`, opens a session, runs `fn`, and closes the session. */
export async function withSession<T>(io: CliIo, command: Command, fn: (s: Session) => Promise<T>): Promise<T> {
  const conn = await resolveConnection(connectionFlags(command), io);
  const session = await Session.open(conn);
  try {
    return await fn(session);
  } finally {
    await session.close();
  }
}

/** A subcommand that talks to the coordinator: connection flags and `--json`. */
export function remoteCommand(parent: Command, nameAndArgs: string, description: string): Command {
  const cmd = parent.command(nameAndArgs).description(description).option('--json', 'print the result as JSON');
  return addConnectionOptions(cmd);
}
