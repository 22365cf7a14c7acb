import { ERROR_CODES, type OtaError } from '../../shared/errors.js';

/**
 * How otactl reports the error that ends a command. In text it is `error CODE: message` and a
 * "what to do" line; under `--json` it is one JSON object on one line of stderr, so a script that
 * parses stdout with jq can parse the failure the same way (stdout stays empty):
 *
 *   {"error":{"code":"E_NOT_FOUND","message":"no device \"cam-9\": ...","fix":"..."}}
 *
 * The exit codes are the same in both forms (0 success, 1 failure, 2 usage error).
 */

export interface ErrorDocument {
  error: { code: string; message: string; fix?: string; stack?: string };
}

/**
 * Whether the command line asks for JSON. Read from the words before commander parses them,
 * because a usage error (an unknown option, a missing argument) is found before any option is
 * known. `--` ends the options: a `--json` after it is an argument.
 */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json');
}

/** The generic fix for a code, from the table docs/errors.md is written from. */
export function fixFor(code: string): string | undefined {
  return (ERROR_CODES as Record<string, { fix: string } | undefined>)[code]?.fix;
}

/**
 * Commander's own messages start with `error: `, otactl's usage errors with `error E_USAGE: `
 * (exit.ts usageError); in the JSON document the code has its own field.
 */
export function plainMessage(message: string): string {
  return message.replace(/^error(?: E_[A-Z_]+)?:\s*/, '').trim();
}

export function errorDocument(
  e: Pick<OtaError, 'code' | 'message'>,
  extra: { fix?: string | undefined; stack?: string | undefined } = {},
): string {
  const doc: ErrorDocument = {
    error: {
      code: e.code,
      message: plainMessage(e.message),
      ...(extra.fix ? { fix: extra.fix } : {}),
      ...(extra.stack ? { stack: extra.stack } : {}),
    },
  };
  return JSON.stringify(doc);
}
