import type { ExternalBrokerOptions, ExternalBrokerRoutes } from '../../coordinator/external-broker/external-broker.js';
import { createLogger } from '../../shared/logger.js';
import type { Topics } from '../../shared/topics.js';

/**
 * The coordinator's client of a test broker: it knows one device, cam-01, and no operators; the
 * routes it is not given take everything and do nothing (a command answers ok). `more` adds or
 * replaces options.
 */
export function coordinatorClientOptions(
  topics: Topics,
  broker: { url: string; password: string },
  routes: Partial<ExternalBrokerRoutes>,
  more: Partial<Omit<ExternalBrokerOptions, 'routes'>> = {},
): ExternalBrokerOptions {
  return {
    url: broker.url,
    username: 'ota-coordinator',
    password: broker.password,
    clientId: 'coordinator-under-test',
    topics,
    logger: createLogger('silent', process.stdout, 'test'),
    maxPayloadBytes: 64 * 1024,
    isDevice: (id) => id === 'cam-01',
    operator: () => null,
    routes: {
      report: () => {},
      presence: () => {},
      metrics: async () => {},
      command: async (_op, request) => ({ correlationId: request.correlationId, ok: true as const, result: null }),
      ...routes,
    },
    ...more,
  };
}
