import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import mqttPacket from 'mqtt-packet';
import t from 'tap';
import { writeMqttNumbersUncached } from '../shared/mqtt-packet-numbers.js';

const require = createRequire(import.meta.url);
/** mqtt-packet's table of the 65,536 2-byte numbers, filled on the first packet written unless turned off. */
const numbers = require('mqtt-packet/numbers.js') as { cache: Record<number, Buffer> };

function written(packet: mqttPacket.Packet): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      done();
    },
  });
  mqttPacket.writeToStream(packet, sink);
  return new Promise((resolve) => setImmediate(() => resolve(Buffer.concat(chunks))));
}

t.test('packets are written without the 65,536-number table, and read back the same', async (t) => {
  // The setting is the module's: it must be the copy mqtt.js and Aedes write with.
  const ours = require.resolve('mqtt-packet');
  for (const user of ['mqtt', 'aedes']) {
    t.equal(
      createRequire(require.resolve(user)).resolve('mqtt-packet'),
      ours,
      `${user} writes with the same mqtt-packet`,
    );
  }
  t.equal(Object.keys(numbers.cache).length, 0, 'no table before the first packet');
  writeMqttNumbersUncached();
  t.equal(mqttPacket.writeToStream.cacheNumbers, false);

  const bytes = await written({
    cmd: 'publish',
    topic: 'ota/v1/devices/cam-1/desired',
    payload: Buffer.from('{"seq":7}'),
    qos: 1,
    messageId: 0x1234,
    retain: true,
    dup: false,
  });
  const ack = await written({ cmd: 'puback', messageId: 65_535 });
  t.equal(Object.keys(numbers.cache).length, 0, 'still no table after writing');

  const parsed: mqttPacket.Packet[] = [];
  const parser = mqttPacket.parser();
  parser.on('packet', (p) => parsed.push(p));
  parser.parse(Buffer.concat([bytes, ack]));
  t.match(parsed, [
    { cmd: 'publish', topic: 'ota/v1/devices/cam-1/desired', qos: 1, messageId: 0x1234, retain: true },
    { cmd: 'puback', messageId: 65_535 },
  ]);
  t.equal((parsed[0] as mqttPacket.IPublishPacket).payload.toString(), '{"seq":7}');
});
