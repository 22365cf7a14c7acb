import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import mqtt from 'mqtt';
import t from 'tap';
import WebSocket from 'ws';
import { DynsecClient } from '../coordinator/external-broker/dynsec-client.js';
import { bridgeWebSocketToBroker } from '../coordinator/external-broker/websocket-bridge.js';
import { syncArtifactsCommand } from '../coordinator/http/sync-artifacts-command.js';
import { createLogger } from '../shared/logger.js';
import { TestBroker } from './helpers/broker.js';
import { freePort } from './helpers/coordinator-process.js';

// Issue 16: the small adapters of external-broker mode, each failure named: the dynamic security
// client against a broker that never answers or refuses its subscription, the /mqtt bridge to a
// broker that is not there, and the sync-artifacts command's exits.

const silent = createLogger('silent', process.stdout, 'test');

function sink() {
  let text = '';
  return { write: (s: string) => (text += s), text: () => text };
}

t.test('dynamic security client: no plugin answers, refused subscription, closed connection', async (t) => {
  // A plain Aedes broker: it takes the control message and nobody answers it.
  const broker = await TestBroker.start();
  t.teardown(() => broker.stop());
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { protocolVersion: 4, clientId: 'dyn' });
  t.teardown(() => client.endAsync(true));
  const dynsec = new DynsecClient(client, 200);
  await t.rejects(dynsec.run([{ command: 'listRoles' }]), { code: 'E_BROKER', message: /did not answer listRoles/ });
  // An answer to someone else's command, and text that is not JSON, are ignored; ours is taken.
  client.publish('$CONTROL/dynamic-security/v1/response', 'not json');
  client.publish('$CONTROL/dynamic-security/v1/response', JSON.stringify({ responses: 'no' }));
  const answering = new DynsecClient(client, 5_000);
  const pending = answering.runAll([{ command: 'deleteClient', username: 'x' }], 'remove x');
  // Answer as the plugin would (the correlationData is `<tag>-<index>`), once the request is out.
  await new Promise<void>((resolve) => {
    const onMessage = (topic: string, payload: Buffer) => {
      if (topic !== '$CONTROL/dynamic-security/v1') return;
      const { commands } = JSON.parse(payload.toString()) as { commands: { correlationData: string }[] };
      client.publish(
        '$CONTROL/dynamic-security/v1/response',
        JSON.stringify({
          responses: [
            { command: 'other' },
            { command: 'deleteClient', error: 'Client not found', correlationData: commands[0]?.correlationData },
          ],
        }),
      );
      client.off('message', onMessage);
      resolve();
    };
    client.on('message', onMessage);
    void client.subscribeAsync('$CONTROL/dynamic-security/v1');
  });
  await t.rejects(pending, {
    code: 'E_BROKER',
    message: /remove x: the broker refused deleteClient: Client not found/,
  });

  // A broker that refuses the subscription to the answers.
  broker.refuseSubscriptions = true;
  const refused = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { protocolVersion: 4, clientId: 'dyn2' });
  t.teardown(() => refused.endAsync(true));
  await t.rejects(new DynsecClient(refused, 500).run([{ command: 'listRoles' }]), {
    code: 'E_BROKER',
    message: /refused the coordinator's subscription/,
  });
  broker.refuseSubscriptions = false;

  const closed = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { protocolVersion: 4, clientId: 'dyn3' });
  const later = new DynsecClient(closed, 500);
  await closed.endAsync(true);
  await t.rejects(later.run([{ command: 'listRoles' }]), { code: 'E_BROKER' });
});

t.test('the /mqtt bridge: other paths, a broker that is not there, close', async (t) => {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as AddressInfo).port;
  const bridge = bridgeWebSocketToBroker(server, { url: `mqtt://127.0.0.1:${await freePort()}` }, silent);
  // Another path: refused (the socket is closed), nothing else listens for upgrades.
  const other = new WebSocket(`ws://127.0.0.1:${port}/elsewhere`);
  await new Promise<void>((resolve) => other.once('error', () => resolve()));
  t.pass('an upgrade on another path is refused');
  // The broker is not there: the WebSocket is closed.
  const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`);
  await new Promise<void>((resolve) => ws.once('close', () => resolve()));
  t.pass('closed when the broker cannot be reached');
  bridge.close();
  // An mqtts:// broker (with its own CA) that is not there either.
  const tlsBridge = bridgeWebSocketToBroker(
    server,
    { url: `mqtts://127.0.0.1:${await freePort()}`, ca: Buffer.from('not a certificate') },
    silent,
  );
  const overTls = new WebSocket(`ws://127.0.0.1:${port}/mqtt`);
  await new Promise<void>((resolve) => overTls.once('close', () => resolve()));
  t.pass('closed when the TLS broker cannot be reached');
  tlsBridge.close();
  // Another upgrade listener on the server: a path that is not ours is left to it.
  const others: string[] = [];
  const otherListener = (req: http.IncomingMessage, socket: import('node:stream').Duplex) => {
    others.push(req.url ?? '');
    socket.destroy();
  };
  server.on('upgrade', otherListener);
  const elsewhere = new WebSocket(`ws://127.0.0.1:${port}/other`);
  await new Promise<void>((resolve) => elsewhere.once('error', () => resolve()));
  t.same(others, ['/other'], 'left to the other listener');
  server.off('upgrade', otherListener);
  // With a broker: bytes pass; close() ends the open connection.
  const broker = await TestBroker.start();
  t.teardown(() => broker.stop());
  const live = bridgeWebSocketToBroker(server, { url: `mqtt://127.0.0.1:${broker.port}` }, silent);
  const client = await mqtt.connectAsync(`ws://127.0.0.1:${port}/mqtt`, {
    protocolVersion: 4,
    clientId: 'ws-1',
    reconnectPeriod: 0,
  });
  const gone = new Promise<void>((resolve) => client.once('close', () => resolve()));
  live.close();
  await gone;
  t.pass('close() ends the bridged connections');
  await client.endAsync(true);
});

t.test('ota-coordinator sync-artifacts exits', async (t) => {
  const dir = t.testdir({ data: { artifacts: { sha256: {} } } });
  const out = sink();
  t.equal(await syncArtifactsCommand(['--data', path.join(dir, 'data'), '--to', path.join(dir, 'to')], out, sink()), 0);
  t.match(out.text(), /^0 copied \(0 bytes\), 0 already there$/m);
  const help = sink();
  t.equal(await syncArtifactsCommand(['--help'], help, sink()), 0);
  t.match(help.text(), /--to <dir>/);
  t.equal(await syncArtifactsCommand([], sink(), sink()), 2, '--to is required');
  const err = sink();
  const before = process.env.OTA_DATA;
  process.env.OTA_DATA = path.join(dir, 'missing');
  t.teardown(() => {
    if (before === undefined) delete process.env.OTA_DATA;
    else process.env.OTA_DATA = before;
  });
  t.equal(
    await syncArtifactsCommand(['--to', path.join(dir, 'to')], sink(), err),
    1,
    'OTA_DATA names the data directory',
  );
  t.match(err.text(), /error E_IO: cannot read .*missing/);
});
