import type { Command } from 'commander';
import type { CommandClient } from '../../client/command-client.js';
import { type Completion, complete, completionScript, FILES, type IdKind, idCandidates } from '../complete.js';
import { type ConnectionFlags, resolveConnection } from '../connection.js';
import type { CliIo } from '../io.js';

/** A TAB must not hang: give up on the coordinator quickly, and then offer no ids. */
const CONNECT_TIMEOUT_MS = 2_000;
const CALL_TIMEOUT_MS = 3_000;

const ID_OPS: Record<IdKind, { op: string; ids: (rows: Record<string, unknown>[]) => unknown[] }> = {
  // (`id`, or `rolloutId` from coordinators that still name the summary's id so.)
  rollouts: { op: 'rollout.ls', ids: (rows) => rows.map((r) => r.id ?? r.rolloutId) },
  devices: { op: 'device.ls', ids: (rows) => rows.map((r) => r.id) },
  groups: { op: 'group.ls', ids: (rows) => rows.map((r) => r.id) },
  keys: { op: 'key.ls', ids: (rows) => rows.map((r) => r.id) },
  models: { op: 'release.ls', ids: (rows) => rows.map((r) => r.model) },
};

/** The connection flags among the words typed so far (`--url U`, `--url=U`). */
function typedConnectionFlags(words: readonly string[]): ConnectionFlags {
  const names: Record<string, keyof ConnectionFlags> = {
    '--url': 'url',
    '--http-url': 'httpUrl',
    '--user': 'user',
    '--token-file': 'tokenFile',
    '--ca': 'ca',
  };
  const flags: Record<string, string> = {};
  words.forEach((word, i) => {
    const [flag, inline] = word.split('=', 2) as [string, string | undefined];
    const key = names[flag];
    const value = inline ?? words[i + 1];
    if (key && value !== undefined && value !== '') flags[key] = value;
  });
  return flags as ConnectionFlags;
}

/** Ids of one kind from the coordinator; none (quietly) when it cannot be reached or refuses. */
async function fetchIds(io: CliIo, words: readonly string[], kind: IdKind): Promise<string[]> {
  let client: CommandClient | null = null;
  try {
    const conn = await resolveConnection(typedConnectionFlags(words), io);
    const { CommandClient } = await import('../../client/command-client.js');
    client = await CommandClient.connect({
      url: conn.url,
      user: conn.user,
      token: conn.token,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      timeoutMs: CALL_TIMEOUT_MS,
      ...(conn.ca ? { ca: conn.ca } : {}),
      ...(conn.topicPrefix ? { topicPrefix: conn.topicPrefix } : {}),
    });
    const rows = await client.call<Record<string, unknown>[]>(ID_OPS[kind].op);
    return ID_OPS[kind].ids(rows).filter((id): id is string => typeof id === 'string');
  } catch {
    return [];
  } finally {
    await client?.close().catch(() => {});
  }
}

export function registerCompletion(program: Command, io: CliIo): void {
  program
    .command('completion')
    .description('print a shell completion script: commands, flags, and ids from the coordinator')
    .addArgument(program.createArgument('<shell>', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish']))
    .addHelpText(
      'after',
      `
Load it now:  source <(otactl completion bash)     (zsh: source <(otactl completion zsh);
              fish: otactl completion fish | source)
Install it:   otactl completion bash > /etc/bash_completion.d/otactl
Rollout, device, model, group and key ids are asked of the coordinator at each TAB, with the
connection otactl would use (the flags typed so far, OTA_* variables, the admin token file);
when it cannot be reached, no ids are offered.`,
    )
    .action((shell: 'bash' | 'zsh' | 'fish') => {
      io.out(completionScript(shell).trimEnd());
    });

  // Called by the scripts above with the words typed so far, the last one being completed.
  program
    .command('__complete', { hidden: true })
    .argument('[words...]')
    .helpOption(false)
    .action(async (words: string[]) => {
      const result: Completion = complete(program, words);
      if (result.type === 'files') io.out(FILES);
      else if (result.type === 'words') for (const w of result.words) io.out(w);
      else for (const id of idCandidates(result, await fetchIds(io, words, result.kind))) io.out(id);
    });
}
