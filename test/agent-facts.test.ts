import t from 'tap';
import { cachedDeviceFacts, fallbackHardwareFacts, readDeviceFacts, readHardwareFacts } from '../agent/facts.js';
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

t.test('every probe timing out at once: the child still answers, within the bound', async (t) => {
  const started = Date.now();
  // A 0 ms limit for each systeminformation probe: the child answers with its node:os values.
  const facts = await readHardwareFacts(0);
  t.ok(Date.now() - started < 2_000, 'well inside the 2 s the parent waits beyond the limit');
  t.ok(facts && DeviceFactsSchema.omit({ freeDiskMB: true }).safeParse(facts).success, 'an answer, not null');
});
