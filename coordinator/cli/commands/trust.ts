import type { Command } from 'commander';
import { OtaError } from '../../../shared/errors.js';
import { readFileOrThrow, writeFileAtomic } from '../../../shared/fs-atomic.js';
import { publicKeyToJson, readPrivateKeyFile, readPublicKeyFile } from '../../../shared/keys.js';
import { signerFor } from '../../../shared/signatures.js';
import {
  cosignTrust,
  parseTrustEnvelope,
  signTrust,
  TRUST_TYPE,
  type TrustDocument,
  type TrustEnvelope,
  verifyTrustSelfSigned,
} from '../../../shared/trust.js';
import { remoteCommand, withSession } from '../connection.js';
import { type CliIo, keyValueLines } from '../io.js';
import { collect, commaList, duration, expiryOf, isoDate, positiveInt } from '../options.js';
import { paint, printJson } from '../render.js';

/**
 * Signed trust rotation (docs/security.md): `key rotate` makes and signs a trust document
 * offline, like `release sign`; `trust sign` adds signatures by other key holders; `trust
 * publish` uploads it; `trust show` prints the trust in force and how far the fleet has it.
 */

/** What `trust.publish` and `trust.show` return (FleetService.trustView). */
export interface TrustView {
  version: number;
  threshold: number;
  keys: { id: string; counted: boolean }[];
  expiresAt: string | null;
  publishedBy: string | null;
  publishedAt: string | null;
  devices: { atVersion: number; behind: number; unknown: number };
  affected?: { releases: string[]; channels: string[]; devices: number };
}

async function readTrustFile(file: string): Promise<TrustEnvelope> {
  let value: unknown;
  try {
    value = JSON.parse((await readFileOrThrow(file)).toString('utf8'));
  } catch (err) {
    if (err instanceof OtaError) throw err;
    throw new OtaError('E_TRUST_DOCUMENT', `${file} is not JSON; pass the file written by \`otactl key rotate --out\``);
  }
  return parseTrustEnvelope(value);
}

async function writeTrustFile(file: string, envelope: TrustEnvelope): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(envelope, null, 2)}\n`);
}

/** null when its own keys' threshold signed it, else why not (it cannot be published yet). */
function missingOwnSignatures(envelope: TrustEnvelope): string | null {
  try {
    verifyTrustSelfSigned(envelope);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

function documentLines(envelope: TrustEnvelope): [string, string][] {
  const document = JSON.parse(envelope.document) as TrustDocument;
  return [
    ['trust version', String(document.version)],
    ['keys', document.keys.map((k) => k.keyId).join(', ')],
    ['threshold', String(document.threshold)],
    ['expires', document.expiresAt ?? 'never'],
    ['signed by', [...new Set(envelope.signatures.map((s) => s.keyId))].join(', ')],
  ];
}

function publishedLines(io: CliIo, view: TrustView): [string, string][] {
  const rows: [string, string][] = [
    ['published', `version ${view.version} by ${view.publishedBy} at ${view.publishedAt}`],
    ['devices', 'every desired state now carries it; a device reports the version it holds (`otactl device show`)'],
  ];
  if (view.affected && view.affected.releases.length > 0) {
    io.err(
      `${view.affected.releases.length} release(s) are not signed by the new keys and will not be assigned again: ${view.affected.releases.join(', ')}` +
        (view.affected.channels.length > 0
          ? `; channel(s) pointing at them: ${view.affected.channels.join(', ')}`
          : '') +
        '; publish new versions signed with the new keys',
    );
  }
  return rows;
}

async function publish(io: CliIo, cmd: Command, envelope: TrustEnvelope): Promise<TrustView> {
  return withSession(io, cmd, (s) => s.call<TrustView>('trust.publish', { envelope }));
}

interface RotateOptions {
  keys: string[];
  threshold: number;
  signWith: string[];
  version?: number;
  expiresAt?: string;
  expiresIn?: number;
  out?: string;
  publish?: boolean;
  json?: boolean;
}

/** `otactl key rotate`: registered under `key` (key.ts). */
export function registerKeyRotate(key: Command, io: CliIo): void {
  remoteCommand(
    key,
    'rotate',
    'make a signed trust document naming the release keys devices trust from now on (offline; --publish uploads it)',
  )
    .requiredOption('--keys <a.pub,b.pub>', 'the new trusted public keys (files written by `otactl keygen`)', commaList)
    .option('--threshold <n>', 'signatures from distinct new keys each release needs', positiveInt, 1)
    .requiredOption(
      '--sign-with <file>',
      'private key signing the document; repeat: enough of the keys trusted now AND of the new keys must sign',
      collect,
    )
    .option(
      '--version <n>',
      'the document version: the current one + 1 (default with --publish: asked from the coordinator)',
      positiveInt,
    )
    .option(
      '--expires-at <date>',
      'ISO date after which devices refuse new releases until a newer trust document',
      isoDate,
    )
    .option('--expires-in <duration>', 'expiry relative to now, e.g. 365d', duration)
    .option('--out <trust.json>', 'write the signed trust document here')
    .option('--publish', 'upload it to the coordinator (as `otactl trust publish`)')
    .action(async (opts: RotateOptions, cmd: Command) => {
      if (!opts.out && !opts.publish) {
        throw new OtaError('E_USAGE', 'nothing to do: pass --out trust.json (to publish later) and/or --publish');
      }
      if (opts.expiresAt && opts.expiresIn)
        throw new OtaError('E_USAGE', 'give --expires-at or --expires-in, not both');
      if (opts.threshold > opts.keys.length) {
        throw new OtaError(
          'E_USAGE',
          `--threshold ${opts.threshold} is more than the ${opts.keys.length} key(s) of --keys: no release could ever be accepted`,
        );
      }
      const keys = await Promise.all(opts.keys.map(readPublicKeyFile));
      const signers = await Promise.all(opts.signWith.map(readPrivateKeyFile));
      let version = opts.version;
      if (version === undefined) {
        if (!opts.publish) {
          throw new OtaError(
            'E_USAGE',
            'pass --version N: the version the coordinator holds plus one (`otactl trust show`), since --out alone signs offline',
          );
        }
        const current = await withSession(io, cmd, (s) => s.call<TrustView>('trust.show'));
        version = current.version + 1;
      }
      const now = new Date();
      const expiresAt = expiryOf(opts, now);
      const document: TrustDocument = {
        type: TRUST_TYPE,
        version,
        keys: keys.map((k) => {
          const { keyId, publicKey } = publicKeyToJson(k);
          return { keyId, publicKey };
        }),
        threshold: opts.threshold,
        createdAt: now.toISOString(),
        ...(expiresAt !== undefined ? { expiresAt } : {}),
      };
      const envelope = signTrust(
        document,
        signers.map((k) => signerFor(k)),
      );
      if (opts.out) await writeTrustFile(opts.out, envelope);
      const missing = missingOwnSignatures(envelope);
      if (missing && opts.publish) {
        throw new OtaError(
          'E_TRUST_THRESHOLD',
          `${missing}; nothing was published${opts.out ? `: add signatures with \`otactl trust sign ${opts.out} --sign-with NEW.key\`, then \`otactl trust publish ${opts.out}\`` : ''}`,
        );
      }
      const published = opts.publish ? await publish(io, cmd, envelope) : null;
      if (opts.json) return printJson(io, { file: opts.out ?? null, version, envelope, published });
      const rows = documentLines(envelope);
      if (opts.out) rows.push(['file', opts.out]);
      if (published) rows.push(...publishedLines(io, published));
      for (const line of keyValueLines(rows)) io.out(line);
      if (missing) {
        io.err(
          `not publishable yet: ${missing}; add signatures with \`otactl trust sign ${opts.out} --sign-with NEW.key\``,
        );
      } else if (!published) {
        io.err(`publish it with \`otactl trust publish ${opts.out}\``);
      }
    });
}

/** `otactl trust sign | publish | show`. */
export function registerTrust(program: Command, io: CliIo): void {
  const trust = program
    .command('trust')
    .description('signed trust documents: which release keys devices trust (docs/security.md)');

  trust
    .command('sign <trust.json>')
    .description('add signatures to a trust document made by `otactl key rotate` (offline)')
    .requiredOption('--sign-with <file>', 'private key to sign with; repeat for several', collect)
    .option('--out <file>', 'write the result here instead of over the input')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, opts: { signWith: string[]; out?: string; json?: boolean }) => {
      const envelope = await readTrustFile(file);
      const signers = await Promise.all(opts.signWith.map(readPrivateKeyFile));
      const signed = cosignTrust(
        envelope,
        signers.map((k) => signerFor(k)),
      );
      const out = opts.out ?? file;
      await writeTrustFile(out, signed);
      const missing = missingOwnSignatures(signed);
      if (opts.json) return printJson(io, { file: out, envelope: signed, publishable: missing === null });
      for (const line of keyValueLines([...documentLines(signed), ['file', out]])) io.out(line);
      io.err(
        missing
          ? `not publishable yet: ${missing}`
          : `signed by its new keys' threshold; publish it with \`otactl trust publish ${out}\` (the coordinator checks the keys trusted now signed it too)`,
      );
    });

  remoteCommand(trust, 'publish <trust.json>', 'upload a signed trust document: every device receives it').action(
    async (file: string, opts: { json?: boolean }, cmd: Command) => {
      const view = await publish(io, cmd, await readTrustFile(file));
      if (opts.json) return printJson(io, view);
      for (const line of keyValueLines(publishedLines(io, view))) io.out(line);
    },
  );

  remoteCommand(trust, 'show', 'the trust in force: version, keys, threshold, and how many devices hold it').action(
    async (opts: { json?: boolean }, cmd: Command) => {
      const view = await withSession(io, cmd, (s) => s.call<TrustView>('trust.show'));
      if (opts.json) return printJson(io, view);
      for (const line of keyValueLines([
        [
          'trust version',
          view.version === 0 ? '0 (the keys added with `otactl key add`; no trust document yet)' : String(view.version),
        ],
        [
          'keys',
          view.keys.length === 0
            ? '-'
            : view.keys.map((k) => (k.counted ? k.id : `${k.id} (${paint(io, 'revoked')})`)).join(', '),
        ],
        ['threshold', String(view.threshold)],
        ['expires', view.expiresAt ?? 'never'],
        ['published', view.publishedAt ? `by ${view.publishedBy} at ${view.publishedAt}` : '-'],
        [
          'devices',
          `${view.devices.atVersion} hold it, ${view.devices.behind} behind, ${view.devices.unknown} not reported`,
        ],
      ])) {
        io.out(line);
      }
    },
  );
}
