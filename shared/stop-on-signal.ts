import type { Logger } from './logger.js';

/**
 * Resolves once the daemon has stopped after SIGTERM or SIGINT (systemd stop, Ctrl-C): logs the
 * signal, runs `stop`, and resolves whether it succeeded or not (the caller exits either way).
 */
export function stopOnSignal(logger: Logger, stop: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      logger.info({ signal }, 'stopping');
      stop().then(resolve, resolve);
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
}
