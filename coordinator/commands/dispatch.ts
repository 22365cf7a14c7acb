import { isOtaError, OtaError, toOtaError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { CommandReply, CommandRequest } from '../../shared/messages.js';
import type { Principal } from '../broker/principal.js';
import { type CommandContext, HANDLERS, parseArgs } from './handlers.js';
import { isOp, OPS, returnsSecret, roleAllows } from './ops.js';

/**
 * Runs one command request (`ota/v1/cmd/{op}`) for an authenticated principal and returns the
 * reply to publish on its `replyTo`. Never throws: every failure becomes `{ ok: false, error }`
 * with a code and a message that says what to do; a bug is logged and answered E_INTERNAL.
 * `sender` is the connection that asked: the reply topics it reads (`ota/v1/reply/{clientId}`, and
 * `ota/v1/reply/{name}/{suffix}` for a client id `name@suffix`), each with anything below it.
 */
export async function runCommand(
  op: string,
  request: CommandRequest,
  principal: Principal,
  ctx: Omit<CommandContext, 'actor' | 'role'>,
  logger: Logger,
  sender?: { replyTopics: readonly string[] },
): Promise<CommandReply> {
  const { correlationId } = request;
  try {
    if (principal.kind !== 'operator') throw new OtaError('E_FORBIDDEN', 'devices cannot run commands');
    if (!isOp(op)) {
      throw new OtaError('E_COMMAND', `unknown command ${JSON.stringify(op)}; known: ${Object.keys(OPS).join(', ')}`);
    }
    if (!roleAllows(principal.role, op)) {
      throw new OtaError('E_FORBIDDEN', `${op} needs the ${OPS[op]} role; ${principal.name} is ${principal.role}`);
    }
    const { replyTo } = request;
    if (sender && returnsSecret(op) && !sender.replyTopics.some((t) => replyTo === t || replyTo.startsWith(`${t}/`))) {
      // Its reply goes only to the asking connection, which reads replies under its own topics.
      throw new OtaError(
        'E_USAGE',
        `${op} returns a new token, which is sent only to the connection that asks: send it with a replyTo under ${sender.replyTopics.join(' or ')} and subscribe there on the same connection (otactl does)`,
      );
    }
    const args = parseArgs(op, request.args);
    const handler = HANDLERS[op] as (a: unknown, c: CommandContext) => unknown;
    const result = await handler(args, { ...ctx, actor: principal.name, role: principal.role });
    return { correlationId, ok: true, result: result ?? null };
  } catch (err) {
    const error = toOtaError(err);
    if (!isOtaError(err)) logger.error({ op, err: (err as Error).stack }, 'command failed with a bug');
    else logger.info({ op, code: error.code, msg: error.message }, 'command refused');
    return { correlationId, ok: false, error: error.toJSON() };
  }
}
