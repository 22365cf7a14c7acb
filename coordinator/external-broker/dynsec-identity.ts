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

  addDevice(id: string, token: string): Promise<void> {
    return this.add('device', id, createDeviceCommands(this.topics, id, token));
  }

  addOperator(name: string, token: string): Promise<void> {
    return this.add('operator', name, createOperatorCommands(this.topics, name, token));
  }

  /**
   * Creates the role, then the client. Called only for a name the store does not have (FleetService),
   * so when both our role and a client of that name exist already, they are ours, left by an
   * attempt whose answer was lost or a removal that did not reach the broker: they are replaced.
   */
  private async add(kind: 'device' | 'operator', name: string, commands: object[]): Promise<void> {
    let responses = await this.dynsec.run(commands);
    const leftover =
      responses[0]?.error && EXISTS.test(responses[0].error) && responses[1]?.error && EXISTS.test(responses[1].error);
    if (leftover) {
      await this.remove(kind, name);
      responses = await this.dynsec.run(commands);
    }
    const problem = createProblem(kind, name, responses);
    if (problem) {
      // The role made just now goes again; a failure to remove it must not hide why we failed.
      const rolename = kind === 'device' ? roleNames.device(name) : roleNames.operator(name);
      if (!responses[0]?.error) await this.dynsec.run([{ command: 'deleteRole', rolename }]).catch(() => {});
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
   * operator added again). A client counts as ours only while it holds our role of its name; any
   * other client is left alone. `ensureOperator` (the admin, whose token the coordinator keeps in
   * its admin token file) is created when missing and its password set when present, so a
   * coordinator started on a fresh data directory against an existing broker can still sign in.
   */
  async reconcile(input: {
    devices: ReadonlySet<string>;
    operators: ReadonlySet<string>;
    ensureOperator?: { name: string; token: string };
    /** Whether these credentials sign in now (setting a password ends that user's sessions). */
    signsIn?: (name: string, token: string) => Promise<boolean>;
  }): Promise<{ removed: string[]; missingDevices: string[]; missingOperators: string[]; created: string[] }> {
    const [listedRoles, listedClients] = await this.dynsec.runAll(
      [
        { command: 'listRoles', verbose: false, count: -1, offset: 0 },
        { command: 'listClients', verbose: true, count: -1, offset: 0 },
      ],
      "listing the broker's roles and clients",
    );
    const roles = ((listedRoles?.data as { roles?: unknown })?.roles ?? []) as unknown[];
    const clients = ((listedClients?.data as { clients?: unknown })?.clients ?? []) as {
      username?: unknown;
      roles?: { rolename?: unknown }[];
    }[];
    /** Client name -> the role names it holds. */
    const holds = new Map<string, Set<string>>();
    for (const c of clients) {
      if (typeof c?.username !== 'string') continue;
      holds.set(c.username, new Set((c.roles ?? []).map((r) => String(r?.rolename))));
    }
    const present = { device: new Set<string>(), operator: new Set<string>() };
    const removed: string[] = [];
    for (const role of roles) {
      const owner = typeof role === 'string' ? ownerOfRole(role) : null;
      if (!owner) continue;
      const kind = owner.kind;
      const name = owner.kind === 'device' ? owner.deviceId : owner.name;
      const inStore = (kind === 'device' ? input.devices : input.operators).has(name);
      const clientHoldsIt = holds.get(name)?.has(role as string) ?? false;
      if (inStore) {
        if (clientHoldsIt) present[kind].add(name);
        continue;
      }
      // Not in the store: our role goes, and the client of that name only when it is ours.
      if (clientHoldsIt) await this.remove(kind, name);
      else await this.dynsec.runAll([{ command: 'deleteRole', rolename: role }], 'deleteRole');
      removed.push(`${kind}:${name}`);
    }
    const created: string[] = [];
    const ensure = input.ensureOperator;
    if (ensure && input.operators.has(ensure.name)) {
      if (present.operator.has(ensure.name)) {
        if (input.signsIn && (await input.signsIn(ensure.name, ensure.token))) {
          // Already right: nothing to change (and nobody's session to end).
        } else {
          await this.dynsec.runAll(
            [{ command: 'setClientPassword', username: ensure.name, password: ensure.token }],
            `setting ${ensure.name}'s password`,
          );
          created.push(`password:${ensure.name}`);
        }
      } else {
        await this.addOperator(ensure.name, ensure.token);
        present.operator.add(ensure.name);
        created.push(`operator:${ensure.name}`);
      }
    }
    return {
      removed,
      created,
      missingDevices: [...input.devices].filter((d) => !present.device.has(d)),
      missingOperators: [...input.operators].filter((o) => !present.operator.has(o)),
    };
  }
}
