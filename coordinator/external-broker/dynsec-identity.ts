import { OtaError } from '../../shared/errors.js';
import type { Topics } from '../../shared/topics.js';
import type { DynsecClient, DynsecResponse } from './dynsec-client.js';
import {
  createDeviceCommands,
  createOperatorCommands,
  deleteCommands,
  ownerOfRole,
  roleNames,
} from './dynsec-rules.js';

/**
 * Who may connect to the broker, kept in step with the coordinator's store (design section 12).
 * The embedded broker reads the store itself and needs none of this; an external one holds its own
 * clients, so enrolling, removing and adding operators change it too. Tokens exist in plain text
 * only when they are made, so a client is created then (the store keeps only a hash).
 */
export interface BrokerIdentity {
  addDevice(id: string, token: string): Promise<void>;
  /** Removes the client and ends its sessions. */
  removeDevice(id: string): Promise<void>;
  addOperator(name: string, token: string): Promise<void>;
  removeOperator(name: string): Promise<void>;
}

const EXISTS = /already exists/i;
const NOT_FOUND = /not found/i;

/** The plugin's answers to create-role + create-client, as an error naming the fix, or null. */
function createProblem(kind: 'device' | 'operator', name: string, responses: DynsecResponse[]): OtaError | null {
  const [role, client] = responses;
  if (client?.error && EXISTS.test(client.error)) {
    return new OtaError(
      'E_CONFLICT',
      `the broker already has a client named ${name}: a ${kind} cannot take that name (it may be another application's, or the coordinator's own account); pick another ${kind === 'device' ? 'id' : 'name'}`,
    );
  }
  // A role left by an earlier attempt (created, then the client failed) is ours and the same.
  if (role?.error && !EXISTS.test(role.error)) return new OtaError('E_BROKER', `createRole: ${role.error}`);
  if (client?.error) return new OtaError('E_BROKER', `createClient: ${client.error}`);
  return null;
}

export class DynsecIdentity implements BrokerIdentity {
  constructor(
    private readonly dynsec: DynsecClient,
    private readonly topics: Topics,
  ) {}

  async addDevice(id: string, token: string): Promise<void> {
    const responses = await this.dynsec.run(createDeviceCommands(this.topics, id, token));
    const problem = createProblem('device', id, responses);
    if (problem) {
      if (!responses[0]?.error) await this.dynsec.run([{ command: 'deleteRole', rolename: roleNames.device(id) }]);
      throw problem;
    }
  }

  async addOperator(name: string, token: string): Promise<void> {
    const responses = await this.dynsec.run(createOperatorCommands(this.topics, name, token));
    const problem = createProblem('operator', name, responses);
    if (problem) {
      if (!responses[0]?.error) await this.dynsec.run([{ command: 'deleteRole', rolename: roleNames.operator(name) }]);
      throw problem;
    }
  }

  removeDevice(id: string): Promise<void> {
    return this.remove('device', id);
  }

  removeOperator(name: string): Promise<void> {
    return this.remove('operator', name);
  }

  /** Gone already counts as done: a retry after a lost answer must not fail. */
  private async remove(kind: 'device' | 'operator', name: string): Promise<void> {
    const responses = await this.dynsec.run(deleteCommands(kind, name));
    const refused = responses.find((r) => r.error !== undefined && !NOT_FOUND.test(r.error));
    if (refused) throw new OtaError('E_BROKER', `${refused.command} ${name}: ${refused.error}`);
  }

  /**
   * At start: the broker's clients of ours whose device or operator is no longer in the store (a
   * removal that did not reach the broker) are removed, and the ones the store has but the broker
   * lacks are returned (their tokens are not known here: they must be enrolled again, or the
   * operator added again). `ensureOperator` gives a token for an operator the coordinator still
   * holds in plain text (the admin token file), which is created when missing.
   */
  async reconcile(input: {
    devices: ReadonlySet<string>;
    operators: ReadonlySet<string>;
    ensureOperator?: { name: string; token: string };
  }): Promise<{ removed: string[]; missingDevices: string[]; missingOperators: string[]; created: string[] }> {
    const [listed] = await this.dynsec.runAll(
      [{ command: 'listRoles', verbose: false, count: -1, offset: 0 }],
      'listRoles',
    );
    const roles = ((listed?.data as { roles?: unknown })?.roles ?? []) as unknown[];
    const haveDevices = new Set<string>();
    const haveOperators = new Set<string>();
    const removed: string[] = [];
    for (const role of roles) {
      const owner = typeof role === 'string' ? ownerOfRole(role) : null;
      if (!owner) continue;
      if (owner.kind === 'device') {
        if (input.devices.has(owner.deviceId)) haveDevices.add(owner.deviceId);
        else {
          await this.removeDevice(owner.deviceId);
          removed.push(`device:${owner.deviceId}`);
        }
      } else if (input.operators.has(owner.name)) haveOperators.add(owner.name);
      else {
        await this.removeOperator(owner.name);
        removed.push(`operator:${owner.name}`);
      }
    }
    const created: string[] = [];
    const ensure = input.ensureOperator;
    if (ensure && input.operators.has(ensure.name) && !haveOperators.has(ensure.name)) {
      await this.addOperator(ensure.name, ensure.token);
      haveOperators.add(ensure.name);
      created.push(`operator:${ensure.name}`);
    }
    return {
      removed,
      created,
      missingDevices: [...input.devices].filter((d) => !haveDevices.has(d)),
      missingOperators: [...input.operators].filter((o) => !haveOperators.has(o)),
    };
  }
}
