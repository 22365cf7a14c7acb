import net from 'node:net';
import { Aedes } from 'aedes';

/**
 * A real Aedes broker on 127.0.0.1 for agent tests. `restart()` brings it back on the same port
 * with empty memory (Aedes keeps sessions and retained messages in memory, as a restarted
 * coordinator would), `stop()` closes it for good.
 */
export class TestBroker {
  private aedes: Aedes | null = null;
  private server: net.Server | null = null;
  port = 0;
  /** Every accepted CONNECT, by client id. */
  readonly connects: string[] = [];
  /** Every SUBSCRIBE the broker completed (SUBACK sent, the subscription live), by client id. */
  readonly subscribes: string[] = [];
  /** Client ids refused for now (CONNACK "not authorized"), to order reconnections in tests. */
  readonly held = new Set<string>();
  /**
   * Client ids whose publishes the broker takes and never acknowledges (no PUBACK), standing in
   * for a broker that dies between receiving a message and acknowledging it.
   */
  readonly unacknowledged = new Set<string>();
  /** Topics published by clients in `unacknowledged` and swallowed. */
  readonly swallowed: string[] = [];
  /** Refuse every SUBSCRIBE (granted 0x80) while true. */
  refuseSubscriptions = false;

  static async start(): Promise<TestBroker> {
    const broker = new TestBroker();
    await broker.listen(0);
    return broker;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  private async listen(port: number): Promise<void> {
    const aedes = await Aedes.createBroker({
      authenticate: (client, _username, _password, done) => done(null, !this.held.has(client.id)),
      authorizePublish: (client, packet, done) => {
        if (client && this.unacknowledged.has(client.id)) this.swallowed.push(packet.topic);
        else done(null);
      },
      // SUBACK 0x80 for every filter while set (a broker whose ACL refuses the subscription).
      authorizeSubscribe: (_client, subscription, done) => done(null, this.refuseSubscriptions ? null : subscription),
    });
    aedes.on('client', (client) => this.connects.push(client.id));
    aedes.on('subscribe', (_subscriptions, client) => this.subscribes.push(client.id));
    const server = net.createServer(aedes.handle);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.aedes = aedes;
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
  }

  /** Cuts one client's TCP connection, as a network drop would; the broker keeps its session. */
  dropClient(clientId: string): boolean {
    const client = (this.aedes as unknown as { clients: Record<string, { conn: { destroy(): void } }> } | null)
      ?.clients[clientId];
    if (!client) return false;
    client.conn.destroy();
    return true;
  }

  async stop(): Promise<void> {
    const { aedes, server } = this;
    this.aedes = null;
    this.server = null;
    if (server) {
      server.close();
      // Drop live connections so clients see the broker go away now.
      (server as net.Server & { closeAllConnections?: () => void }).closeAllConnections?.();
    }
    if (aedes) await new Promise<void>((r) => aedes.close(() => r()));
  }

  async restart(downMs = 0): Promise<void> {
    const port = this.port;
    await this.stop();
    if (downMs) await new Promise((r) => setTimeout(r, downMs));
    await this.listen(port);
  }
}
