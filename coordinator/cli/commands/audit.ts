import { randomBytes } from 'node:crypto';
import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { OtaError } from '../../../shared/errors.js';
import { ioError } from '../../../shared/fs-atomic.js';
import type { AuditEvent } from '../../../shared/messages.js';
import type { AuditVerdict } from '../../store/records.js';
import { remoteCommand, withSession } from '../connection.js';
import { type CliIo, keyValueLines } from '../io.js';
import { nonNegativeInt, positiveInt } from '../options.js';
import { printJson, printTable, shortHash } from '../render.js';

const PAGE = 1000;

function details(d: Record<string, unknown>, max = 80): string {
  const text = JSON.stringify(d);
  if (text === '{}') return '-';
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

function chainError(v: AuditVerdict): OtaError {
  return new OtaError(
    'E_AUDIT_CHAIN',
    `the audit chain does not verify: first bad seq ${v.firstBad ?? '?'}${v.reason ? ` (${v.reason})` : ''}; treat the database as tampered with and restore it from a backup`,
  );
}

function lineWriter(file: string | undefined, io: CliIo) {
  if (!file) {
    return { write: async (line: string) => io.out(line), close: async () => {}, abort: async () => {} };
  }
  // Written next to the target and renamed at the end: a failed export leaves no half file.
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  const stream = createWriteStream(tmp, { flags: 'wx', mode: 0o600 });
  let failure: Error | null = null;
  stream.on('error', (err) => {
    failure = err;
  });
  return {
    write: (line: string) =>
      new Promise<void>((resolve, reject) => {
        if (failure) return reject(ioError(failure, file));
        if (stream.write(`${line}\n`)) resolve();
        else stream.once('drain', resolve);
      }),
    close: async () => {
      await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
      if (failure) throw ioError(failure, file);
      await fs.rename(tmp, file).catch((err: unknown) => {
        throw ioError(err, file);
      });
    },
    abort: async () => {
      stream.destroy();
      await fs.rm(tmp, { force: true });
    },
  };
}

export function registerAudit(program: Command, io: CliIo): void {
  const audit = program.command('audit').description('the hash-chained audit log of every change');

  remoteCommand(audit, 'ls', 'list audit events, oldest first')
    .option('--rollout <id>', 'only the events of this rollout')
    .option('--after-seq <n>', 'events after this sequence number', nonNegativeInt)
    .option('--limit <n>', 'at most this many events (default 100, max 1000)', positiveInt)
    .action(async (opts: { rollout?: string; afterSeq?: number; limit?: number; json?: boolean }, cmd: Command) => {
      if (opts.limit !== undefined && opts.limit > PAGE) {
        throw new OtaError(
          'E_USAGE',
          `--limit ${opts.limit} is above ${PAGE}; page with --after-seq, or use \`otactl audit export\``,
        );
      }
      const events = await withSession(io, cmd, (s) =>
        s.call<AuditEvent[]>('audit.ls', {
          ...(opts.rollout ? { rolloutId: opts.rollout } : {}),
          ...(opts.afterSeq !== undefined ? { afterSeq: opts.afterSeq } : {}),
          ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
        }),
      );
      if (opts.json) return printJson(io, events);
      printTable(
        io,
        ['SEQ', 'TIME', 'ACTOR', 'ACTION', 'SUBJECT', 'DETAILS'],
        events.map((e) => [String(e.seq), e.ts, e.actor, e.action, e.subject ?? '-', details(e.details)]),
        opts.rollout ? `no audit events for rollout ${opts.rollout}` : 'no audit events',
      );
    });

  remoteCommand(audit, 'verify', 'check the hash chain of the whole audit log (exit 1 when it does not verify)').action(
    async (opts: { json?: boolean }, cmd: Command) => {
      const verdict = await withSession(io, cmd, (s) => s.call<AuditVerdict>('audit.verify'));
      if (opts.json) printJson(io, verdict);
      else if (verdict.ok) {
        for (const line of keyValueLines([
          ['audit chain', io.color.green('verifies')],
          ['events', String(verdict.count)],
          ['head', verdict.head],
        ])) {
          io.out(line);
        }
      } else {
        for (const line of keyValueLines([
          ['audit chain', io.color.red('does NOT verify')],
          ['events', String(verdict.count)],
          ['first bad', String(verdict.firstBad ?? '?')],
          ['reason', verdict.reason ?? '-'],
        ])) {
          io.out(line);
        }
      }
      if (!verdict.ok) throw chainError(verdict);
    },
  );

  remoteCommand(audit, 'export', 'every audit event as NDJSON, then a line with the chain verdict (exit 1 when not ok)')
    .option('--out <file>', 'write to this file instead of stdout')
    .action(async (opts: { out?: string; json?: boolean }, cmd: Command) => {
      const out = lineWriter(opts.out, io);
      let count = 0;
      let verdict: AuditVerdict | null = null;
      try {
        await withSession(io, cmd, async (s) => {
          let afterSeq = 0;
          for (;;) {
            const page = await s.call<{ events: AuditEvent[]; verdict: AuditVerdict }>('audit.export', {
              afterSeq,
              limit: PAGE,
            });
            for (const e of page.events) await out.write(JSON.stringify(e));
            count += page.events.length;
            verdict = page.verdict;
            const last = page.events.at(-1);
            if (page.events.length < PAGE || !last) break;
            afterSeq = last.seq;
          }
        });
        const final = verdict as AuditVerdict | null;
        if (!final) throw new OtaError('E_INTERNAL', 'audit.export returned no verdict');
        await out.write(JSON.stringify({ verdict: final }));
        await out.close();
      } catch (err) {
        await out.abort();
        throw err;
      }
      const v = verdict as unknown as AuditVerdict;
      io.err(
        `exported ${count} event(s)${opts.out ? ` to ${opts.out}` : ''}; chain ${v.ok ? `verifies, head ${shortHash(v.head, 16)}` : 'does NOT verify'}`,
      );
      if (!v.ok) throw chainError(v);
    });
}
