import type { Command } from 'commander';
import { OtaError } from '../../../shared/errors.js';
import { writeFileAtomic } from '../../../shared/fs-atomic.js';
import { untrustedCertificateCode } from '../../client/tls-trust.js';
import { uploadRelease } from '../../client/upload-release.js';
import type { ChannelView } from '../../commands/views.js';
import type { ReleaseRecord } from '../../store/records.js';
import { connectionFlags, remoteCommand, resolveConnection, untrustedError, withSession } from '../connection.js';
import { type CliIo, keyValueLines } from '../io.js';
import { bytes, paint, printJson, printTable, shortHash } from '../render.js';
import {
  addSigningOptions,
  buildSignedRelease,
  checkSigningOptions,
  releaseLines,
  type SignOptions,
} from './release-sign.js';

type PublishedRelease = Omit<ReleaseRecord, 'envelope'> & { channel: ChannelView | null; retargeted: number };
/** A row of `release ls`: revoked once its valid signatures from trusted keys fall below the threshold. */
type ListedRelease = Omit<ReleaseRecord, 'envelope'> & {
  revoked: boolean;
  revokedReason: string | null;
  revokedKeys: string[];
};
type PublishOptions = SignOptions & { channel?: string; yes?: boolean; out?: string; json?: boolean };

/** `release publish`: signs locally exactly as `release sign`, then uploads envelope and model over HTTP. */
export function registerReleasePublish(release: Command, io: CliIo): void {
  addSigningOptions(
    remoteCommand(
      release,
      'publish',
      'sign a model release locally (as `release sign` does) and upload it to the coordinator',
    ),
  )
    .option('--channel <channel>', 'also point this channel at the release: its devices are re-targeted at once')
    .option('--yes', 'confirm moving --channel when that re-targets more than 5 devices at once')
    .option('--out <envelope.json>', 'also keep the signed envelope in this file')
    .action(async (opts: PublishOptions, cmd: Command) => {
      checkSigningOptions(opts);
      // Connection settings first: a missing token is reported before any signing work.
      const conn = await resolveConnection(connectionFlags(cmd), io);
      const { manifest, envelope } = await buildSignedRelease(opts, new Date());
      const keyIds = envelope.signatures.map((s) => s.keyId);
      if (opts.out) await writeFileAtomic(opts.out, `${JSON.stringify(envelope, null, 2)}\n`);
      io.err(`signed ${manifest.model}@${manifest.version} with ${keyIds.join(', ')}; uploading to ${conn.httpUrl}`);
      let shown = -1;
      const result = (await uploadRelease({
        url: conn.httpUrl,
        user: conn.user,
        token: conn.token,
        envelope,
        file: opts.file,
        channel: opts.channel ?? null,
        ...(opts.yes ? { yes: true } : {}),
        ...(conn.ca ? { ca: conn.ca } : {}),
        onProgress: (sent, total) => {
          const pct = total === 0 ? 100 : Math.floor((sent * 100) / total);
          if (pct === shown) return;
          shown = pct;
          io.progress(`uploading ${opts.file}: ${pct}% (${bytes(sent)} of ${bytes(total)})`);
        },
      }).catch((err: unknown) => {
        const untrusted = untrustedCertificateCode(err);
        if (untrusted) throw untrustedError(conn.httpUrl, untrusted, conn, err);
        if (err instanceof OtaError && err.code === 'E_CONNECT') {
          throw new OtaError(
            'E_CONNECT',
            `${err.message} (the HTTP URL is ${conn.from.httpUrl}; set it with --http-url or OTA_HTTP_URL)`,
            { cause: err },
          );
        }
        throw err;
      })) as PublishedRelease;
      io.progress(`uploaded ${opts.file} (${bytes(manifest.size)}) to ${conn.httpUrl}`, true);
      if (opts.json) return printJson(io, result);
      for (const line of keyValueLines([
        ...releaseLines(manifest, keyIds),
        ['published', `${result.id} by ${result.publishedBy} at ${result.publishedAt}`],
        [
          'channel',
          result.channel
            ? `${result.channel.channel} now points at ${result.channel.releaseId} (${result.retargeted} device(s) re-targeted)`
            : '- (roll it out with `otactl rollout create`, or move a channel with `otactl channel set`)',
        ],
      ])) {
        io.out(line);
      }
    });
}

export function registerReleaseLs(release: Command, io: CliIo): void {
  remoteCommand(release, 'ls', 'list published releases')
    .option('--model <name>', 'only this model')
    .action(async (opts: { model?: string; json?: boolean }, cmd: Command) => {
      const releases = await withSession(io, cmd, (s) =>
        s.call<ListedRelease[]>('release.ls', opts.model ? { model: opts.model } : {}),
      );
      if (opts.json) return printJson(io, releases);
      printTable(
        io,
        ['RELEASE', 'COUNTER', 'SIZE', 'SHA256', 'STATUS', 'PUBLISHED', 'BY'],
        releases.map((r) => [
          r.id,
          String(r.counter),
          bytes(r.size),
          shortHash(r.sha256),
          r.revoked ? `${paint(io, 'revoked')} (key ${r.revokedKeys.join(', ') || '-'})` : paint(io, 'ok'),
          r.publishedAt,
          r.publishedBy,
        ]),
        opts.model
          ? `no releases of ${opts.model}: see \`otactl release ls\``
          : 'no releases: publish one with `otactl release publish --model M --version V --file F --key K`',
      );
    });
}
