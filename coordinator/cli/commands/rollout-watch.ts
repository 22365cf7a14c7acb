import { type RolloutStatus, type RolloutSummary, RolloutSummarySchema } from '../../../shared/messages.js';
import { decodePayload } from '../../../shared/payload.js';
import type { Session } from '../connection.js';
import { EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK } from '../exit.js';
import type { CliIo } from '../io.js';
import { nextSteps, renderSummary, summaryLine } from '../render.js';

/** Argo's convention: completed 0; halted or aborted non-zero; anything else keeps watching. */
export function exitCodeFor(status: RolloutStatus): number | null {
  switch (status) {
    case 'completed':
      return EXIT_OK;
    case 'halted':
    case 'aborted':
      return EXIT_FAILURE;
    default:
      return null;
  }
}

/**
 * `rollout status ID --watch`: follows the retained summary on `rollouts/{id}` (pushed on every
 * change), with a `rollout.status` poll every `intervalMs` as a safety net. Redraws in place on
 * a terminal, one line per change otherwise, one JSON summary per line with --json. Resolves the
 * exit code: 0 completed, 1 halted or aborted, 130 on Ctrl-C.
 */
export async function watchRollout(
  io: CliIo,
  session: Session,
  id: string,
  opts: { json?: boolean; intervalMs: number },
): Promise<number> {
  const topic = session.topics.rollout(id);
  const live = opts.json ? null : await io.live();
  let last: RolloutSummary | null = null;
  let lastText = '';
  return new Promise<number>((resolve, reject) => {
    let finished = false;
    const finish = (outcome: number | Error) => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      stopListening();
      live?.done();
      if (outcome instanceof Error) {
        reject(outcome);
        return;
      }
      if (last) {
        const s = last;
        if (outcome === EXIT_INTERRUPTED) io.err(`stopped watching; rollout ${s.rolloutId} is ${s.status} and goes on`);
        else if (s.status === 'completed') io.err(io.color.green(`rollout ${s.rolloutId} completed`));
        else {
          io.err(io.color.red(`rollout ${s.rolloutId} ${s.status}${s.haltReason ? `: ${s.haltReason}` : ''}`));
          const next = nextSteps(s);
          if (next) io.err(next);
        }
      }
      resolve(outcome);
    };
    const show = (s: RolloutSummary) => {
      if (finished || s.rolloutId !== id) return;
      if (last && s.updatedAt < last.updatedAt) return;
      const text = JSON.stringify(s);
      if (text === lastText) return;
      lastText = text;
      last = s;
      if (opts.json) io.out(text);
      else live?.update(io.stdoutIsTTY ? renderSummary(io, s) : summaryLine(s));
      const code = exitCodeFor(s.status);
      if (code !== null) finish(code);
    };
    const stopListening = io.onInterrupt(() => finish(EXIT_INTERRUPTED));
    const poll = () =>
      session.call<{ summary: RolloutSummary }>('rollout.status', { id }).then(
        (r) => show(r.summary),
        (err: Error) => finish(err),
      );
    const timer = setInterval(poll, opts.intervalMs);
    void session.closed('while watching the rollout').then(finish);
    session
      .subscribe(topic, (payload) => {
        try {
          show(decodePayload(RolloutSummarySchema, payload, topic));
        } catch {
          // An unreadable summary: the next poll shows the state.
        }
      })
      .then(poll, (err: Error) => finish(err));
  });
}
