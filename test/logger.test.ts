import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pc from 'picocolors';
import t from 'tap';
import { createLogger, logFormatFor, prettyLine } from '../shared/logger.js';

// Both daemons log through createLogger on stdout: JSON lines with a syslog priority prefix for
// journald and pipes, readable lines when stdout is a terminal.

const LOGGER = fileURLToPath(new URL('../dist/shared/logger.js', import.meta.url));

/** A destination that keeps what is written, and says whether it is a terminal. */
function sink(isTTY: boolean) {
  const chunks: string[] = [];
  const stream = Object.assign(
    new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk.toString());
        done();
      },
    }),
    { isTTY },
  );
  return { stream, text: () => chunks.join('') };
}

t.test('the format follows whether stdout is a terminal', async (t) => {
  t.equal(logFormatFor({ isTTY: true }), 'pretty');
  t.equal(logFormatFor({ isTTY: false }), 'json');
  t.equal(logFormatFor({}), 'json', 'a pipe or a file has no isTTY');
});

t.test('not a terminal: JSON lines with the priority prefix, token redacted', async (t) => {
  const out = sink(false);
  const logger = createLogger('debug', out.stream, 'ota-coordinator');
  logger.info({ device: 'cam-1', token: 'secret' }, 'device connected');
  logger.warn('disk low');
  logger.flush();
  const lines = out.text().trimEnd().split('\n');
  t.equal(lines.length, 2);
  t.match(lines[0], /^<6>\{/);
  t.match(JSON.parse((lines[0] as string).slice(3)), {
    level: 30,
    service: 'ota-coordinator',
    device: 'cam-1',
    token: '[redacted]',
    msg: 'device connected',
  });
  t.match(lines[1], /^<4>\{.*"msg":"disk low"/);
});

t.test('a terminal: readable lines, no prefix, no JSON, token redacted', async (t) => {
  const out = sink(true);
  const logger = createLogger('info', out.stream, 'ota-agent');
  logger.info({ device: 'cam-1', token: 'secret', n: 3 }, 'device connected');
  logger.error({ err: new Error('boom') }, 'apply failed');
  logger.flush();
  const text = out.text();
  t.notMatch(text, /^<\d>/m, 'no priority prefix');
  t.notMatch(text, /^\{/m, 'no JSON line');
  t.notMatch(text, /secret/);
  const lines = text.split('\n');
  t.match(lines[0], /^\d\d:\d\d:\d\d\.\d{3} INFO {2}device connected device=cam-1 token=\[redacted\] n=3$/);
  t.match(lines[1], /^\d\d:\d\d:\d\d\.\d{3} ERROR apply failed err=boom$/);
  t.match(lines[2], /^ {4}Error: boom$/, 'the stack follows, indented');
});

t.test('prettyLine', async (t) => {
  const plain = pc.createColors(false);
  const time = Date.UTC(2026, 0, 2, 3, 4, 5, 6);
  t.equal(
    prettyLine(JSON.stringify({ level: 40, time, pid: 1, service: 's', msg: 'slow', ms: 1200, where: 'a b' }), plain),
    '03:04:05.006 WARN  slow ms=1200 where="a b"',
  );
  t.equal(
    prettyLine(JSON.stringify({ level: 20, time, msg: 'x', nested: { a: [1] } }), plain),
    '03:04:05.006 DEBUG x nested={"a":[1]}',
  );
  t.equal(prettyLine('not json\n', plain), 'not json', 'anything else is passed through');
  const colored = prettyLine(JSON.stringify({ level: 50, time, msg: 'bad' }), pc.createColors(true));
  t.match(colored, '\u001B[31mERROR\u001B[39m', 'errors in red on a colour terminal');
});

// The real decision on a real pseudo-terminal (util-linux `script`), against the built module.
let hasScript = true;
try {
  execFileSync('script', ['--version'], { stdio: 'ignore' });
} catch {
  hasScript = false;
}

t.test('through a pseudo-terminal and through a pipe', { skip: hasScript ? false : 'no script(1)' }, async (t) => {
  // A daemon's first lines, as coordinator/main.ts logs them: createLogger on process.stdout.
  const dir = t.testdir({
    'daemon.mjs': `import { createLogger } from ${JSON.stringify(LOGGER)};\ncreateLogger('info', process.stdout, 'ota-coordinator').info({ port: 1883 }, 'ota-coordinator ready');\n`,
  });
  const daemon = path.join(dir, 'daemon.mjs');
  const env = { ...process.env, NO_COLOR: '1' };
  const tty = spawnSync('script', ['-qec', `${process.execPath} ${daemon}`, '/dev/null'], { env, encoding: 'utf8' });
  t.equal(tty.status, 0, tty.stderr);
  t.match(tty.stdout, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}ota-coordinator ready port=1883\r?$/m, 'readable on a terminal');
  t.notMatch(tty.stdout, /<6>/);
  const pipe = spawnSync(process.execPath, [daemon], { env, encoding: 'utf8' });
  t.equal(pipe.status, 0, pipe.stderr);
  t.match(pipe.stdout, /^<6>\{"level":30,.*"msg":"ota-coordinator ready"\}\n$/, 'JSON with the prefix in a pipe');
});
