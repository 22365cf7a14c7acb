import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import type { AdminTokenFile } from '../coordinator/identity/bootstrap.js';
import { startCoordinator } from '../coordinator/service.js';
import { goodModel, goodProbe } from '../scripts/tiny-models.js';
import { createLogger } from '../shared/logger.js';
import { AgentProcess } from './helpers/agent-process.js';
import { otactl } from './helpers/cli.js';

// A coordinator with a self-signed certificate (a private CA): otactl says to pass --ca when it
// does not trust it, and `device add --agent-config` writes a config the agent connects with as
// it is (broker.caFile from --agent-ca-file), or refuses before enrolling when it could not.

const silent = createLogger('silent', process.stdout, 'ota-coordinator');
const json = <T = unknown>(text: string): T => JSON.parse(text) as T;

let hasOpenssl = true;
try {
  execFileSync('openssl', ['version'], { stdio: 'ignore' });
} catch {
  hasOpenssl = false;
}

t.test('otactl and agent configs with a private CA', { skip: hasOpenssl ? false : 'no openssl' }, async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'data');
  const work = path.join(dir, 'work');
  await fs.mkdir(work);
  const at = (f: string) => path.join(work, f);
  const cert = at('coordinator.pem');
  const key = at('coordinator.key');
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'],
      ...['-keyout', key, '-out', cert, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
    ],
    { stdio: 'ignore' },
  );
  const config = resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0, tlsCert: cert, tlsKey: key }, {});
  const running = await startCoordinator(config, { logger: silent });
  t.teardown(() => running.stop());
  t.match(running.mqttUrl, /^mqtts:\/\//);
  const adminToken = json<AdminTokenFile>(await fs.readFile(running.adminTokenFile, 'utf8'));
  const admin = await CommandClient.connect({
    url: running.mqttUrl,
    user: 'admin',
    token: adminToken.token,
    ca: await fs.readFile(cert),
  });
  t.teardown(() => admin.close());
  const env = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: dataDir };
  const run = (args: string[], extra: NodeJS.ProcessEnv = {}) => otactl(args, { cwd: work, env: { ...env, ...extra } });

  await t.test('without --ca, the error says to pass --ca', async (t) => {
    const [mqtt, asJson, viaEnv] = await Promise.all([
      run(['device', 'ls']),
      run(['device', 'ls', '--json']),
      run(['device', 'ls'], { OTA_CA: cert }),
    ]);
    t.equal(mqtt.code, 1);
    t.match(mqtt.stderr, /error E_CONNECT: the coordinator at mqtts:\/\/127\.0\.0\.1:\d+ presented a certificate/);
    t.match(mqtt.stderr, /DEPTH_ZERO_SELF_SIGNED_CERT/);
    t.match(mqtt.stderr, /--ca FILE or OTA_CA=FILE/);
    t.notMatch(mqtt.stderr, /is ota-coordinator running/, 'not sent looking for a stopped coordinator');
    t.equal(asJson.code, 1);
    t.match(json(asJson.stderr), { error: { code: 'E_CONNECT', message: /--ca FILE/ } });
    t.equal(viaEnv.code, 0, `OTA_CA: ${viaEnv.stderr}`);

    // A wrong CA is named as the one that did not sign it.
    const other = at('other.pem');
    execFileSync(
      'openssl',
      [
        ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'],
        ...['-keyout', at('other.key'), '-out', other, '-subj', '/CN=other'],
      ],
      { stdio: 'ignore' },
    );
    const wrong = await run(['device', 'ls', '--ca', other]);
    t.equal(wrong.code, 1);
    t.match(wrong.stderr, /the CA certificate .*other\.pem \(--ca\) did not sign it/);

    // The upload goes over HTTPS: the same advice.
    await fs.writeFile(at('v1.onnx'), goodModel(1));
    await fs.writeFile(at('probe.json'), JSON.stringify(goodProbe()));
    t.equal((await run(['keygen', '--out', at('release.key')])).code, 0);
    const upload = await run([
      ...['release', 'publish', '--model', 'det', '--version', '1.0.0', '--file', at('v1.onnx')],
      ...['--key', at('release.key'), '--probe', at('probe.json')],
    ]);
    t.equal(upload.code, 1);
    t.match(upload.stderr, /the coordinator at https:\/\/127\.0\.0\.1:\d+ presented a certificate/);
    t.match(upload.stderr, /--ca FILE/);
  });

  await t.test('device add --agent-config: complete with --agent-ca-file, refused without', async (t) => {
    const ca = ['--ca', cert];
    t.equal((await run(['key', 'add', at('release.key.pub'), ...ca])).code, 0);

    const refused = await run(['device', 'add', 'cam-1', '--agent-config', at('cam-1.json'), ...ca]);
    t.equal(refused.code, 2, refused.stderr);
    t.match(refused.stderr, /error E_USAGE: the coordinator's certificate at mqtts:.* is not publicly trusted/);
    t.match(refused.stderr, /nothing was enrolled/);
    t.match(refused.stderr, /--agent-ca-file/);
    t.same(await admin.call('device.ls'), [], 'nothing enrolled');
    await t.rejects(fs.stat(at('cam-1.json')), { code: 'ENOENT' }, 'no file written');

    const relative = await run(['device', 'add', 'cam-1', '--agent-ca-file', 'ca.pem', ...ca]);
    t.equal(relative.code, 2);
    t.match(relative.stderr, /absolute path of the CA certificate on the device/);

    // Here the "device" is this host, so the CA's path on it is the test's file.
    const added = await run([
      ...['device', 'add', 'cam-1', '--agent-config', at('cam-1.json'), '--agent-ca-file', cert],
      ...[...ca, '--json'],
    ]);
    t.equal(added.code, 0, added.stderr);
    t.match(json(added.stdout), { agentConfig: { broker: { url: running.mqttUrl, caFile: cert } } });
    const written = json<{ broker: { url: string; caFile?: string } }>(await fs.readFile(at('cam-1.json'), 'utf8'));
    t.same(written.broker, { url: running.mqttUrl, caFile: cert }, 'broker.caFile in the written config');

    // The agent connects with the file exactly as written (only its state directory is set).
    const agent = new AgentProcess(at('cam-1.json'), { OTA_AGENT_STATE_DIR: path.join(dir, 'cam-1-state') });
    t.teardown(() => agent.stop());
    await agent.waitForLog((l) => l.msg === 'connected to the broker', 60_000);
    for (;;) {
      const rows = await admin.call<{ id: string; online: boolean }[]>('device.ls');
      if (rows.find((d) => d.id === 'cam-1')?.online) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.pass('cam-1 is online over mqtts');

    // It downloads over HTTPS with the same CA: a release on its channel ends healthy on it.
    const published = await run([
      ...['release', 'publish', '--model', 'det', '--version', '1.0.0', '--file', at('v1.onnx')],
      ...['--key', at('release.key'), '--probe', at('probe.json'), '--channel', 'stable', ...ca],
    ]);
    t.equal(published.code, 0, published.stderr);
    type Row = { id: string; models: Record<string, { version: string | null; state: string; error?: unknown }> };
    let det: Row['models'][string] | undefined;
    for (const end = Date.now() + 90_000; Date.now() < end; ) {
      const rows = await admin.call<Row[]>('device.ls');
      det = rows.find((d) => d.id === 'cam-1')?.models.det;
      if (det && (det.state === 'healthy' || det.state === 'failed' || det.state === 'rolled_back')) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    t.match(det, { version: '1.0.0', state: 'healthy' }, 'the model came over https with broker.caFile');

    // Without --agent-config the config is only printed: a warning says what it lacks.
    const printed = await run(['device', 'add', 'cam-2', ...ca, '--json']);
    t.equal(printed.code, 0, printed.stderr);
    t.match(printed.stderr, /warning: the agent of cam-2 connects to mqtts:.*--agent-ca-file PATH/);
    t.same(
      await run(['device', 'add', 'cam-3', ...ca, '--agent-ca-file', cert]).then((r) => r.stderr.match(/warning/)),
      null,
    );
  });
});
