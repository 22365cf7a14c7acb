import { fork } from 'node:child_process';
import { once } from 'node:events';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { cachedDeviceFacts, fallbackHardwareFacts, readDeviceFacts, readHardwareFacts } from '../agent/facts.js';
import { childExecArgv } from '../agent/node-flags.js';
import { DeviceFactsSchema } from '../shared/messages.js';

// Device facts come from a short-lived child process (systeminformation stays out of the
// long-running agent); the agent falls back to node:os when the child cannot answer.

t.test('the child answers with systeminformation facts, not the node:os fallback', async (t) => {
  const facts = await readDeviceFacts(t.testdir(), 10_000);
  t.ok(DeviceFactsSchema.safeParse(facts).success, 'schema-valid');
  t.equal(facts.arch, process.arch);
  t.ok(facts.cpuCores > 0 && facts.memoryMB > 0);
  // systeminformation names the distribution (e.g. "Debian GNU/Linux 12"); node:os only the kernel.
  t.not(facts.os, fallbackHardwareFacts().os, `os: ${facts.os}`);
});

t.test('hardware facts are read once; the disk every time', async (t) => {
  const read = await readHardwareFacts(10_000);
  t.ok(read && DeviceFactsSchema.omit({ freeDiskMB: true }).safeParse(read).success, 'the child answered');
  const facts = cachedDeviceFacts(t.testdir(), 10_000);
  const a = await facts();
  const b = await facts();
  t.same({ ...a, freeDiskMB: 0 }, { ...b, freeDiskMB: 0 }, 'the same hardware facts');
  t.same({ ...a, freeDiskMB: 0 }, { ...read, freeDiskMB: 0 }, "the child's, not the fallback");
  t.ok(b.freeDiskMB > 0, 'free disk space read');
});

t.test('a probe that never answers: the child still answers, with the fallback for it', async (t) => {
  // systeminformation's graphics probe runs `lspci`; here it is a program that never answers
  // (it reads its stdin, which stays open until the child exits). The child bounds each probe by
  // its limit (100 ms here), so it must answer, with no accelerators, instead of waiting forever.
  // Without the bound the child would hang and the test time out; no clock is read here: the
  // parent's own deadline (limit + 2 s, which a busy machine can overrun) is left out on purpose.
  const bin = t.testdir({ lspci: '#!/bin/sh\nexec cat\n' });
  await fs.chmod(path.join(bin, 'lspci'), 0o755);
  const child = fork(fileURLToPath(new URL('../agent/facts-child.ts', import.meta.url)), ['100'], {
    execArgv: childExecArgv(),
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
  });
  let stdout = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString('utf8');
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  t.equal(code, 0, 'the child exited by itself');
  const facts = DeviceFactsSchema.omit({ freeDiskMB: true }).safeParse(JSON.parse(stdout));
  t.ok(facts.success, 'schema-valid facts');
  t.same(facts.data?.accelerators, [], 'the probe that never answered gave its fallback');
  t.equal(facts.data?.arch, process.arch);
});
