#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs, printResult, round } from './common.js';

/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, e.g. the coordinator's with
 * `npm run bench:fleet -- --cpu-prof-dir DIR`): the functions with the most self time and the
 * most inclusive time (time with everything they called), as JSON.
 *
 *   node dist/scripts/bench/profile-summary.js --file DIR/CPU.*.cpuprofile [--top 25] [--filter coordinator/]
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileRow {
  fn: string;
  ms: number;
  share: number;
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  idleMs: number;
  gcMs: number;
  self: ProfileRow[];
  inclusive: ProfileRow[];
}

function label(f: CallFrame): string {
  const name = f.functionName || '(anonymous)';
  if (!f.url) return name;
  const url = f.url.replace(/^file:\/\//, '');
  const short = url.includes('/node_modules/')
    ? url.slice(url.lastIndexOf('/node_modules/') + 14)
    : url.includes('/dist/')
      ? url.slice(url.indexOf('/dist/') + 6)
      : path.basename(url);
  return `${name} ${short}:${f.lineNumber + 1}`;
}

export function summarizeProfile(file: string, top = 25, filter = ''): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Time per node from samples and their time deltas (microseconds).
  const nodeUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const id = samples[i] as number;
    const dt = deltas[i + 1] ?? 0; // the delta after a sample is the time it stands for
    nodeUs.set(id, (nodeUs.get(id) ?? 0) + Math.max(0, dt));
  }
  const totalUs = [...nodeUs.values()].reduce((a, b) => a + b, 0);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let idleUs = 0;
  let gcUs = 0;
  for (const [id, us] of nodeUs) {
    const node = byId.get(id);
    if (!node) continue;
    const name = node.callFrame.functionName;
    if (name === '(idle)') idleUs += us;
    if (name === '(garbage collector)') gcUs += us;
    const l = label(node.callFrame);
    self.set(l, (self.get(l) ?? 0) + us);
    // Each distinct function on the stack gets the sample once (recursion counted once).
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur);
      if (!n) break;
      const cl = label(n.callFrame);
      if (seen.has(cl)) continue;
      seen.add(cl);
      inclusive.set(cl, (inclusive.get(cl) ?? 0) + us);
    }
  }
  const busyUs = totalUs - idleUs;
  const rows = (m: Map<string, number>) =>
    [...m.entries()]
      .filter(([k]) => !['(root)', '(idle)', '(program)'].includes(k.split(' ')[0] ?? '') && k.includes(filter))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([fn, us]) => ({ fn, ms: round(us / 1000, 1), share: round(us / Math.max(1, busyUs), 3) }));
  return {
    file,
    totalMs: round(totalUs / 1000, 0),
    idleMs: round(idleUs / 1000, 0),
    gcMs: round(gcUs / 1000, 0),
    self: rows(self),
    inclusive: rows(inclusive),
  };
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const args = parseArgs(
    process.argv.slice(2),
    {
      file: { default: '', help: 'the .cpuprofile file' },
      top: { default: 25, help: 'rows per table' },
      filter: { default: '', help: 'only functions whose label contains this' },
    },
    'profile-summary --file F.cpuprofile',
  );
  if (!args.file) {
    process.stderr.write('profile-summary: --file is required\n');
    process.exit(2);
  }
  printResult(summarizeProfile(args.file, args.top, args.filter));
}
