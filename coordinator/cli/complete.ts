import type { Command, Option } from 'commander';

/**
 * Shell completion for otactl, decided here once for bash, zsh and fish: the shell script
 * (`otactl completion SHELL`) passes the words typed so far to the hidden `otactl __complete`,
 * which prints the candidates one per line. Commands and flags come from the command tree
 * itself, so completion never goes stale; ids (rollouts, devices, models, groups, keys) come from
 * the coordinator.
 */

/** Ids the coordinator knows, completed where a command takes one. */
export type IdKind = 'rollouts' | 'devices' | 'models' | 'groups' | 'keys';
export const ID_KINDS: readonly IdKind[] = ['rollouts', 'devices', 'models', 'groups', 'keys'];

/** Printed instead of candidates when the word is a file name: the shell completes paths. */
export const FILES = ':files';

/** Positional arguments that are ids, by command path. */
const ARGUMENT_IDS: Record<string, readonly (IdKind | null)[]> = {
  'device show': ['devices'],
  'device rm': ['devices'],
  'channel set': ['models'],
  'key revoke': ['keys'],
  'rollout status': ['rollouts'],
  'rollout approve': ['rollouts'],
  'rollout promote': ['rollouts'],
  'rollout halt': ['rollouts'],
  'rollout resume': ['rollouts'],
  'rollout abort': ['rollouts'],
};

/** Option values that are ids, whatever the command (`--devices` is a comma-separated list). */
const OPTION_IDS: Record<string, IdKind> = {
  '--model': 'models',
  '--group': 'groups',
  '--devices': 'devices',
  '--rollout': 'rollouts',
};

/** Option values that are files on this host (`--agent-ca-file` is a path on the device: not completed). */
const FILE_OPTIONS = new Set([
  '--ca',
  '--token-file',
  '--out',
  '--file',
  '--key',
  '--probe',
  '--envelope',
  '--pubkey',
  '--agent-config',
  '--sign-with',
]);

export type Completion =
  | { type: 'words'; words: string[] }
  | { type: 'files' }
  | { type: 'ids'; kind: IdKind; prefix: string; current: string };

function visibleCommands(cmd: Command): Command[] {
  return cmd.commands.filter((c) => !c.name().startsWith('__'));
}

/** The option `flag` as `cmd` or a command above it accepts it (program options come before the command). */
function findOption(cmd: Command, flag: string): Option | undefined {
  for (let c: Command | null = cmd; c; c = c.parent) {
    const found = c.options.find((o) => o.long === flag || o.short === flag);
    if (found) return found;
  }
  return undefined;
}

function takesValue(o: Option | undefined): boolean {
  return o !== undefined && (o.required || o.optional);
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** The flags worth offering for `cmd`: its own (long form), and --help. */
function flagsOf(cmd: Command): string[] {
  const flags = cmd.options.filter((o) => !o.hidden && o.long).map((o) => o.long as string);
  return [...flags, '--help'];
}

/**
 * What to offer for the last of `words` (the word being typed, possibly empty), after the words
 * before it. Pure: ids are asked for, not fetched (see `ids` in the result).
 */
export function complete(program: Command, words: readonly string[]): Completion {
  const current = words.at(-1) ?? '';
  const before = words.slice(0, -1);
  let cmd = program;
  let positional = 0;
  /** The option whose value the current word is, when the previous word asked for one. */
  let pendingValue: Option | undefined;
  let optionsEnded = false;
  for (const word of before) {
    if (pendingValue) {
      pendingValue = undefined;
      continue;
    }
    if (!optionsEnded && word === '--') {
      optionsEnded = true;
      continue;
    }
    if (!optionsEnded && word.startsWith('-') && word !== '-') {
      const [flag, inline] = word.split('=', 2) as [string, string | undefined];
      const option = findOption(cmd, flag);
      if (takesValue(option) && inline === undefined) pendingValue = option;
      continue;
    }
    const sub =
      positional === 0 ? cmd.commands.find((c) => c.name() === word || c.aliases().includes(word)) : undefined;
    if (sub) cmd = sub;
    else positional++;
  }
  if (pendingValue) {
    const flag = pendingValue.long ?? '';
    if (pendingValue.argChoices) return filtered(pendingValue.argChoices, current);
    const kind = OPTION_IDS[flag];
    if (kind) {
      // A list (`--devices cam-1,cam-2`): complete its last item.
      const head = flag === '--devices' ? current.slice(0, current.lastIndexOf(',') + 1) : '';
      return { type: 'ids', kind, prefix: head, current: current.slice(head.length) };
    }
    if (FILE_OPTIONS.has(flag)) return { type: 'files' };
    return { type: 'words', words: [] };
  }
  if (current.startsWith('-') && !optionsEnded) return filtered(flagsOf(cmd), current);
  const subs = visibleCommands(cmd);
  if (subs.length > 0 && positional === 0)
    return filtered(
      subs.map((c) => c.name()),
      current,
    );
  const kind = ARGUMENT_IDS[commandPath(cmd)]?.[positional] ?? null;
  if (kind) return { type: 'ids', kind, prefix: '', current };
  return { type: 'words', words: [] };
}

function filtered(words: readonly string[], current: string): Completion {
  return { type: 'words', words: words.filter((w) => w.startsWith(current)) };
}

/** The candidates for an `ids` completion, given the ids of that kind. */
export function idCandidates(c: Extract<Completion, { type: 'ids' }>, ids: readonly string[]): string[] {
  // Items already in a list (`--devices cam-1,`) are not offered again.
  const listed = new Set(c.prefix.split(','));
  return [...new Set(ids)].filter((id) => id.startsWith(c.current) && !listed.has(id)).map((id) => `${c.prefix}${id}`);
}

/** The completion scripts: each passes the words typed so far to `otactl __complete`. */
export function completionScript(shell: 'bash' | 'zsh' | 'fish'): string {
  switch (shell) {
    case 'bash':
      return `# otactl completion for bash. Load it with: source <(otactl completion bash)
# or install it: otactl completion bash > /etc/bash_completion.d/otactl
_otactl() {
  # The words from COMP_LINE rather than COMP_WORDS: COMP_WORDBREAKS splits URLs at ':' and '='.
  local line=\${COMP_LINE:0:COMP_POINT} words=() cur out
  read -r -a words <<<"$line"
  [[ $line == *[[:space:]] || \${#words[@]} -le 1 ]] && words+=("")
  cur=\${words[-1]}
  out=$(command otactl __complete -- "\${words[@]:1}" 2>/dev/null) || return 0
  if [[ $out == "${FILES}" ]]; then
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -f -- "$cur")
  elif [[ -n $out ]]; then
    mapfile -t COMPREPLY <<<"$out"
  fi
  return 0
}
complete -F _otactl otactl
`;
    case 'zsh':
      return `#compdef otactl
# otactl completion for zsh. Load it with: source <(otactl completion zsh)
# or install it as _otactl in a directory of $fpath.
_otactl() {
  local out
  out=$(command otactl __complete -- "\${(@)words[2,CURRENT]}" 2>/dev/null) || return 1
  if [[ $out == "${FILES}" ]]; then
    _files
    return
  fi
  local -a candidates
  candidates=("\${(@f)out}")
  compadd -- "\${candidates[@]}"
}
if [[ $funcstack[1] == _otactl ]]; then
  _otactl "$@"
else
  compdef _otactl otactl
fi
`;
    case 'fish':
      return `# otactl completion for fish. Load it with: otactl completion fish | source
# or install it: otactl completion fish > ~/.config/fish/completions/otactl.fish
function __otactl_complete
    set -l words (commandline -opc)
    set -e words[1]
    set -l out (command otactl __complete -- $words (commandline -ct) 2>/dev/null)
    if test "$out[1]" = "${FILES}"
        __fish_complete_path (commandline -ct)
        return
    end
    printf '%s\\n' $out
end
complete -c otactl -f -a '(__otactl_complete)'
`;
  }
}
