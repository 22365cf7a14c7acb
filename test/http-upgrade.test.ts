import net from 'node:net';
import t from 'tap';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';

// Node's HTTP parser passes request targets that `new URL` cannot parse (`http://[`): an upgrade
// request with one reached the WebSocket listener, whose parse threw out of an event handler and
// took the coordinator down, for anyone who can reach the HTTP port, without credentials.

function rawUpgrade(port: number, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(
        `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
    });
    let got = '';
    socket.on('data', (d) => {
      got += d.toString();
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
  });
}

t.test('upgrade requests with targets URL cannot parse are closed; the coordinator keeps serving', async (t) => {
  const { running, admin } = await startInProcessCoordinator(t);
  const port = Number(new URL(running.httpUrl).port);
  for (const target of ['http://[', 'http://a:b:c/', '//[::1/', 'http://%zz/', '*']) {
    const answer = await rawUpgrade(port, target);
    t.notMatch(answer, /101 Switching Protocols/, `${target}: not upgraded`);
  }
  const health = await fetch(`${running.httpUrl}/healthz`);
  t.equal(health.status, 200, 'still serving HTTP');
  t.same(await admin.call('device.ls'), [], 'and MQTT');
});
