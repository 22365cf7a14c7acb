#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs, printResult, spread } from './common.js';

/**
 * Medians of several runs of one benchmark, for BENCHMARKS.md:
 *
 *   node dist/scripts/bench/aggregate.js --keys rollout.totalMs,halt.p99Ms run1.json run2.json run3.json
 *   node dist/scripts/bench/aggregate.js --markdown --keys ... run*.json
 *
 * Every numeric leaf of the result documents is addressed by its dotted path (array items by
 * index, e.g. `rollout.perWave.3.waveMs`); without --keys all of them are listed.
 */

const args = parseArgs(
  process.argv.slice(2).filter((a) => a.startsWith('--') || !a.endsWith('.json')),
  {
    keys: { default: '', help: 'comma-separated dotted paths (default: every numeric leaf)' },
    markdown: { default: false, help: 'print a Markdown table instead of JSON' },
  },
  'aggregate [--keys a.b,c] [--markdown] RESULT.json...',
);
const files = process.argv.slice(2).filter((a) => a.endsWith('.json'));

function leaves(value: unknown, prefix: string, out: Map<string, number>): void {
  if (typeof value === 'number' && Number.isFinite(value)) out.set(prefix, value);
  else if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) leaves(v, prefix ? `${prefix}.${i}` : String(i), out);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
  }
}

const runs = files.map((f) => {
  const m = new Map<string, number>();
  leaves(JSON.parse(readFileSync(f, 'utf8')), '', m);
  return m;
});
const wanted = args.keys
  ? args.keys.split(',').map((k) => k.trim())
  : [...new Set(runs.flatMap((r) => [...r.keys()]))].filter((k) => !k.startsWith('machine.'));
const rows = wanted.map((key) => {
  const values = runs.map((r) => r.get(key)).filter((v): v is number => v !== undefined);
  return { key, ...(values.length > 0 ? spread(values, 1) : { median: null, min: null, max: null, runs: 0 }) };
});

if (args.markdown) {
  const lines = ['| measure | median | min | max | runs |', '| --- | ---: | ---: | ---: | ---: |'];
  for (const r of rows) lines.push(`| \`${r.key}\` | ${r.median} | ${r.min} | ${r.max} | ${r.runs} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
} else printResult({ files, measures: rows });
