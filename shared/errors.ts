/**
 * One error type for the whole project, with stable string codes (design section 9).
 *
 * `OtaError` is a normal failure with a code an operator or a fleet script can act on; anything
 * else thrown is a bug. The table below is the single source of `docs/errors.md`
 * (`npm run docs:errors` writes it, and a test fails when the two disagree).
 */

export const ERROR_CODES = {
  E_USAGE: {
    area: 'cli',
    meaning: 'A command was called with missing or invalid arguments.',
    fix: 'Read the usage printed with the error (`otactl <command> --help`).',
  },
  E_CONFIG: {
    area: 'config',
    meaning: 'A configuration file or value is missing or invalid; the message names the key.',
    fix: 'Correct the named key in the config file or the environment variable that overrides it.',
  },
  E_FILE_PERMISSIONS: {
    area: 'config',
    meaning:
      'An agent file is open to other users: the config holding the device token inline, or the `tokenFile`, is readable by others, or the config or token file is writable by others.',
    fix: 'Run the `chmod o-rw FILE` the message names. Group read stays allowed (the package and install-agent.sh install the config 0640 root:ota-agent); 0600 works too.',
  },
  E_IO: {
    area: 'io',
    meaning: 'A file could not be read or written (missing, permission denied, disk full).',
    fix: 'Check the path named in the message, its permissions and free space.',
  },
  E_EXISTS: {
    area: 'io',
    meaning: 'Refused to overwrite an existing file (for example a private key).',
    fix: 'Choose another path, or remove the old file yourself if you really mean to replace it.',
  },
  E_KEY_FILE: {
    area: 'keys',
    meaning: 'A key file is not a valid Ed25519 key file of this project.',
    fix: 'Pass the file written by `otactl keygen` (`.pub` for public keys).',
  },
  E_KEY_PERMISSIONS: {
    area: 'keys',
    meaning: 'A private key file is readable by group or others.',
    fix: 'Run `chmod 600` on the key file.',
  },
  E_PAYLOAD_TOO_LARGE: {
    area: 'protocol',
    meaning: 'A message is larger than the protocol cap (256 KiB by default).',
    fix: 'Send a smaller payload; large data goes through the artifact store, not MQTT.',
  },
  E_PAYLOAD_JSON: {
    area: 'protocol',
    meaning: 'A message is not valid UTF-8 JSON.',
    fix: 'Send a JSON document; see docs/schemas/ for each topic.',
  },
  E_PAYLOAD_SCHEMA: {
    area: 'protocol',
    meaning: 'A message does not match its schema; the message names the first bad field.',
    fix: 'Validate the payload against the matching file in docs/schemas/.',
  },
  E_TOPIC: {
    area: 'protocol',
    meaning: 'A topic is not one of the protocol topics, or an id inside it is invalid.',
    fix: 'Use the topic layout of docs/protocol.md; ids are letters, digits, `.`, `_`, `-`.',
  },
  E_NAME: {
    area: 'releases',
    meaning: 'A model name, version or id contains a path separator, `..` or characters outside the allowed set.',
    fix: 'Use 1-64 characters from letters, digits, `.`, `_`, `-` (and `+` in versions), starting with a letter or digit.',
  },
  E_MANIFEST: {
    area: 'releases',
    meaning: 'A release manifest is malformed or inconsistent (for example floor above counter).',
    fix: 'Re-sign the release with `otactl release sign`; do not edit an envelope by hand.',
  },
  E_SIGNATURE: {
    area: 'releases',
    meaning: 'A signature does not verify over the exact signed bytes (tampered text or signature).',
    fix: 'Fetch the envelope again; if it persists, the release or the message was altered: do not trust it.',
  },
  E_SIGNATURE_MALLEATED: {
    area: 'releases',
    meaning: 'A signature is not in canonical form (S >= L, RFC 8032 section 5.1.7).',
    fix: 'Treat as an attack or a broken signer; re-sign with `otactl release sign`.',
  },
  E_UNKNOWN_KEY: {
    area: 'releases',
    meaning: 'No signature is from a trusted key.',
    fix: 'Add the publisher key to the trusted keys (`otactl key add`, agent config), or sign with a trusted key.',
  },
  E_THRESHOLD: {
    area: 'releases',
    meaning: 'Fewer valid signatures from distinct trusted keys than the threshold requires.',
    fix: 'Have more trusted keys sign the manifest (repeat `--key`), or lower the threshold deliberately.',
  },
  E_FLOOR: {
    area: 'releases',
    meaning:
      'The release counter is below the rollback floor (the manifest floor or the highest floor the device has verified).',
    fix: 'Publish the model again with a counter at or above the floor.',
  },
  E_EXPIRED: {
    area: 'releases',
    meaning: 'The manifest expired (`expiresAt` is in the past).',
    fix: 'Re-sign the release with a later expiry.',
  },
  E_MODEL_MISMATCH: {
    area: 'releases',
    meaning: 'The manifest is for another model (or version) than the one it was assigned as.',
    fix: 'Assign the envelope of the right model; a swapped envelope is an attack.',
  },
  E_RELEASE_REVOKED: {
    area: 'releases',
    meaning:
      'The release is no longer signed by enough keys the coordinator trusts (a signing key was revoked or rotated out), so it is not assigned to devices any more.',
    fix: 'Sign the model again with a trusted key (`otactl release sign --key ...`) and publish it as a new version.',
  },
  E_TRUST_DOCUMENT: {
    area: 'trust',
    meaning:
      'A trust document is malformed: unknown fields, a key id that does not match its key, a key listed twice, or a threshold above the number of keys.',
    fix: 'Make it again with `otactl key rotate`; do not edit a trust document by hand.',
  },
  E_TRUST_THRESHOLD: {
    area: 'trust',
    meaning:
      'A trust document is not signed by the threshold of the keys trusted now, or not by the threshold of its own new keys.',
    fix: 'Sign it with enough of the keys devices trust now and of the new keys (`otactl trust sign FILE --sign-with KEY`).',
  },
  E_TRUST_VERSION: {
    area: 'trust',
    meaning: 'A trust document does not have a version above the one held (a replay or a rollback of trust).',
    fix: 'Make the rotation with the next version (`otactl trust show` prints the current one).',
  },
  E_TRUST_EXPIRED: {
    area: 'trust',
    meaning:
      'The trust document is past its `expiresAt`: a device holding it refuses new releases until a newer trust document arrives.',
    fix: 'Publish a new trust document (`otactl key rotate ... --publish`), with a later expiry or none.',
  },
  E_REPLAY: {
    area: 'protocol',
    meaning: 'A desired-state message has a `seq` at or below the last one the device accepted (a replay).',
    fix: 'Nothing to do on the device: after a restored coordinator database the coordinator catches up with the seq the device reports (docs/coordinator.md). If it persists, check who publishes on the desired topic.',
  },
  E_WRONG_DEVICE: {
    area: 'protocol',
    meaning: 'A signed desired state is addressed to another device.',
    fix: 'Treat as an attack or a misrouted message; the coordinator only publishes a device its own state.',
  },
  E_DIGEST: {
    area: 'releases',
    meaning: 'The sha256 of the bytes differs from the signed manifest.',
    fix: 'Download the artifact again; if it persists, the artifact was altered: do not trust it.',
  },
  E_SIZE: {
    area: 'releases',
    meaning: 'The artifact is larger or smaller than the signed size.',
    fix: 'Download the artifact again; if it persists, the artifact was altered: do not trust it.',
  },
  E_DOWNLOAD: {
    area: 'download',
    meaning: 'The artifact download failed (connection refused or reset, HTTP error status).',
    fix: 'Check that the coordinator URL is reachable from the device; the agent retries with backoff by itself.',
  },
  E_UNREACHABLE: {
    area: 'agent',
    meaning: 'The artifact server could not be reached (connection refused, no route, name not resolved).',
    fix: 'Usually the coordinator is restarting or the network is down: the agent keeps retrying without using up its attempts. Check `artifactsUrl` if it persists.',
  },
  E_DOWNLOAD_TIMEOUT: {
    area: 'download',
    meaning: 'The download did not finish before its deadline.',
    fix: 'Raise `download.deadlineMs` in the agent config for slow links; the download resumes where it stopped.',
  },
  E_DOWNLOAD_STALLED: {
    area: 'download',
    meaning: 'No bytes arrived for longer than the stall timeout.',
    fix: 'Check the network path; the agent resumes from the partial file on its next attempt.',
  },
  E_DISK_SPACE: {
    area: 'download',
    meaning: 'Not enough free disk space for the artifact (checked before downloading).',
    fix: 'Free space in the agent state directory, or lower `keep` versions; the assignment is retried when desired state changes.',
  },
  E_REQUIREMENTS: {
    area: 'releases',
    meaning: 'The device does not meet the release requirements (architecture, memory, accelerators).',
    fix: 'Target devices that meet the `requires` of the manifest, or publish a build for this device.',
  },
  E_EXTERNAL_DATA: {
    area: 'models',
    meaning: 'The model references external data outside its own directory.',
    fix: 'Export the model with its weights embedded; references outside the model directory are an attack.',
  },
  E_MODEL_INVALID: {
    area: 'models',
    meaning: 'The file is not a model onnxruntime can load.',
    fix: 'Export the model again; `otactl release sign --no-inspect` signs it anyway (it will fail its probe).',
  },
  E_PROBE_SPEC: {
    area: 'models',
    meaning: 'A probe spec is invalid or does not match the model inputs and outputs.',
    fix: 'Fix the probe file as docs/probe-spec.md describes.',
  },
  E_PROBE_FAILED: {
    area: 'probe',
    meaning: 'The inference health probe ran and the outputs differ from the golden outputs.',
    fix: 'The candidate model is wrong for its probe: do not promote it.',
  },
  E_PROBE_NONFINITE: {
    area: 'probe',
    meaning: 'The model produced NaN or infinite outputs.',
    fix: 'The candidate model is broken: do not promote it.',
  },
  E_PROBE_TIMEOUT: {
    area: 'probe',
    meaning: 'The inference health probe did not finish within its timeout.',
    fix: 'Make the model faster or raise `timeoutMs` in the probe spec.',
  },
  E_PROBE_LATENCY: {
    area: 'probe',
    meaning: 'An inference run took longer than the latency budget of the probe.',
    fix: 'Make the model faster on this device class or raise `latencyBudgetMs`.',
  },
  E_PROBE_EXTRA: {
    area: 'probe',
    meaning: 'An extra probe (http, file or exec) failed.',
    fix: 'Check the application the extra probe talks to; the message names the probe.',
  },
  E_NOT_ALLOWED: {
    area: 'probe',
    meaning: 'An exec probe or reload action names a program that is not on the device allowlist.',
    fix: 'Add the absolute path to `execProbeAllowlist` / `reloadAllowlist` in the agent config, deliberately.',
  },
  E_APPLY: {
    area: 'agent',
    meaning: 'The verified model could not be installed (filesystem error during move, fsync or swap).',
    fix: 'Check the state directory (space, permissions, filesystem health); `current` still points at the old version.',
  },
  E_ROLLBACK: {
    area: 'agent',
    meaning: 'The probe failed and swapping back to the previous version failed too.',
    fix: 'Inspect the device: `models/<name>/current` is left as the message says.',
  },
  E_CRASH_LOOP: {
    area: 'agent',
    meaning: 'The agent restarted too often in the same step of an update; the update was stopped.',
    fix: 'Look at the agent logs before the restarts; a new desired state starts a fresh attempt.',
  },
  E_METRICS_LINE: {
    area: 'metrics',
    meaning:
      'A line on the device metrics socket is not JSON, longer than 64 KiB, not an object or array, or a batch of more than 1000 observations. Its observations are counted as dropped.',
    fix: 'Send one JSON object (an observation) or array (a batch of at most 1000) per line, ended by a newline (docs/metrics.md, Wire format).',
  },
  E_METRICS_FIELD: {
    area: 'metrics',
    meaning:
      'An observation has a missing, wrong-typed, out-of-range or unknown field (only model, version, latencyMs, confidence, error, values exist).',
    fix: 'Fix the field the message names: latencyMs a number >= 0, confidence in [0, 1], error a boolean, values an object of numbers.',
  },
  E_METRICS_UNKNOWN_MODEL: {
    area: 'metrics',
    meaning: 'An observation names a model this agent does not install.',
    fix: 'Report the model name the agent installed (the directory name under models/).',
  },
  E_METRICS_UNKNOWN_VERSION: {
    area: 'metrics',
    meaning:
      'An observation names a version of the model that the agent does not have (current, previous or installing).',
    fix: 'Report the version the application actually loaded (the target of models/<name>/current).',
  },
  E_METRICS_VALUE_NAME: {
    area: 'metrics',
    meaning: 'A custom value name is not declared in the agent config, is not a valid name, or there are more than 4.',
    fix: 'Declare the name in the agent config `metrics.values` (1-32 lowercase letters, digits, "_", from a letter), at most 4.',
  },
  E_ROLLOUT_HALTED: {
    area: 'rollouts',
    meaning: 'The rollout is halted and serves no new assignments.',
    fix: 'Inspect the failures (`otactl rollout status ID`), then `resume` or `abort` it.',
  },
  E_ROLLOUT_STATE: {
    area: 'rollouts',
    meaning:
      'The operation does not apply to the rollout in its current status (e.g. approve a rollout that waits for nothing).',
    fix: 'Check the status with `otactl rollout status ID`; the message says which operations apply now.',
  },
  E_STRATEGY: {
    area: 'rollouts',
    meaning:
      'A rollout strategy is invalid (wave percents not strictly increasing, last wave not 100, failure rate outside [0, 1)).',
    fix: 'Fix `--waves` / `--max-failure-rate` as the message says, e.g. `--waves 1,10:manual,50,100 --max-failure-rate 0.05`.',
  },
  E_EXPERIMENT_SPEC: {
    area: 'experiments',
    meaning:
      'An experiment or analysis definition is invalid: a `--metric` that does not parse, a split outside 1-99, an arm with no device, an analysis file that does not validate.',
    fix: "Fix the part the message names, e.g. `--metric 'latency_ms p95 <= +10%'` (docs/experiments.md).",
  },
  E_EXPERIMENT_STATE: {
    area: 'experiments',
    meaning: 'The operation does not apply to the experiment in its current status (e.g. promote one that was halted).',
    fix: 'Check it with `otactl experiment status ID`; an ended experiment cannot be changed, create a new one.',
  },
  E_CONFLICT: {
    area: 'coordinator',
    meaning:
      'The change conflicts with the current state (a device already in another active rollout of the model, a name already taken).',
    fix: 'The message names the conflicting object: finish or abort it first, or pick another name.',
  },
  E_NOT_FOUND: {
    area: 'coordinator',
    meaning: 'A named device, group, release, channel, key, operator or rollout does not exist.',
    fix: 'Check the names listed in the message (`otactl device ls`, `release ls`, `rollout ls`).',
  },
  E_AUTH: {
    area: 'coordinator',
    meaning:
      'Authentication failed: unknown user, wrong token, or an MQTT client id that is not the device id (a device) or the name or name@suffix (an operator).',
    fix: 'Use the token printed by `otactl device add` / `operator add`, or the admin token file in the data directory.',
  },
  E_FORBIDDEN: {
    area: 'coordinator',
    meaning:
      'The operator role does not allow this operation (viewers only read; operators cannot manage operators or keys).',
    fix: 'Ask an admin, or use an account with the role the message names.',
  },
  E_COMMAND: {
    area: 'coordinator',
    meaning: 'Unknown command operation.',
    fix: 'See docs/commands.md for the list of operations.',
  },
  E_AUDIT_CHAIN: {
    area: 'coordinator',
    meaning: 'The audit chain does not verify: a row was changed, removed or inserted behind the coordinator.',
    fix: 'Treat the database as tampered with; the message names the first bad sequence number. Restore from a backup and investigate.',
  },
  E_BROKER: {
    area: 'coordinator',
    meaning:
      'The external MQTT broker (`--broker`) refused the coordinator, did not answer, or refused a change to its clients and roles (Mosquitto dynamic security).',
    fix: "Check the broker is up and reachable at the `--broker` URL, that `--broker-user` and `--broker-password-file` match the client `ota-coordinator mosquitto-config` wrote, and the broker log; the message names the broker's own reason. Then retry.",
  },
  E_CONNECT: {
    area: 'cli',
    meaning: 'Could not connect to the coordinator (broker or HTTP).',
    fix: 'Check that ota-coordinator runs and the URL (`--url` / `OTA_URL`) points at it.',
  },
  E_TIMEOUT: {
    area: 'cli',
    meaning: 'The coordinator did not answer in time.',
    fix: 'Check the coordinator log; retry with a longer `--timeout`.',
  },
  E_INTERNAL: {
    area: 'any',
    meaning: 'A bug: something happened that the code does not expect.',
    fix: 'Report it with the log lines around it.',
  },
} as const satisfies Record<string, { area: string; meaning: string; fix: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class OtaError extends Error {
  override readonly name = 'OtaError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The `{ code, message }` shape that reports and command replies carry (design section 3). */
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isOtaError(err: unknown, code?: ErrorCode): err is OtaError {
  return err instanceof OtaError && (code === undefined || err.code === code);
}

/** Wraps anything thrown into an OtaError: OtaErrors pass through, the rest become E_INTERNAL. */
export function toOtaError(err: unknown): OtaError {
  if (err instanceof OtaError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new OtaError('E_INTERNAL', message, { cause: err });
}
