import { type ErrorCode, OtaError } from './errors.js';

/**
 * Secrets in files that other users can open are refused rather than used (as ssh refuses a
 * private key others can read). One check for every such file; each caller says which bits are
 * too open and how to fix it, and passes the mode of the file it actually read (fstat of the
 * open descriptor, or stat, which follows a symlink to its target: a link's own mode is 0777).
 */
export interface SecretFileRule {
  /** Permission bits that must be clear (of 0o077: group and others). */
  forbidden: number;
  code: ErrorCode;
  /** The command that clears them, for `file`. */
  fix: (file: string) => string;
}

/** Private release keys: nobody but the owner (ssh's rule). */
export const PRIVATE_KEY_RULE: SecretFileRule = {
  forbidden: 0o077,
  code: 'E_KEY_PERMISSIONS',
  fix: (file) => `chmod 600 ${file}`,
};

/**
 * The device token (agent config with an inline token, token file) and the agent config (its
 * trusted keys and program allowlists): others may neither read nor write it. Group read stays
 * allowed: the package (and install-agent.sh) install the config 0640 root:ota-agent for the agent's group.
 */
export const DEVICE_SECRET_RULE: SecretFileRule = {
  forbidden: 0o006,
  code: 'E_FILE_PERMISSIONS',
  fix: (file) => `chmod o-rw ${file}`,
};

/** The open bits of `mode` that `forbidden` names, in words ("readable by group and others"); null when none. Pure. */
export function openBitsInWords(mode: number, forbidden: number): string | null {
  const open = mode & forbidden & 0o077;
  if (open === 0) return null;
  const words: string[] = [];
  for (const [bit, verb] of [
    [0o4, 'readable'],
    [0o2, 'writable'],
    [0o1, 'executable'],
  ] as const) {
    const whom = [open & (bit << 3) ? 'group' : null, open & bit ? 'others' : null].filter((w) => w !== null);
    if (whom.length > 0) words.push(`${verb} by ${whom.join(' and ')}`);
  }
  return words.join(', ');
}

/**
 * The error for `file` (what `what` says it is) with `mode`, or null when the rule allows it.
 * `target`: where a symlink `file` points, named too (the mode is the target's). Pure.
 */
export function secretFileError(
  file: string,
  mode: number,
  rule: SecretFileRule,
  what: string,
  target?: string,
): OtaError | null {
  const words = openBitsInWords(mode, rule.forbidden);
  if (words === null) return null;
  const named = target && target !== file ? `${file} (-> ${target})` : file;
  return new OtaError(
    rule.code,
    `${named} (${what}) is ${words} (mode ${(mode & 0o777).toString(8)}); run: ${rule.fix(target ?? file)}`,
  );
}
