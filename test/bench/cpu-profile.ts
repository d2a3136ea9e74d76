import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Reads what `node --cpu-prof` wrote for a process's main thread and says
 * where its samples went within a window of time: the functions with the
 * most self time, and the time by where the code lives (our dist/ files,
 * each node_modules package, Node's internals). Run alone on a file:
 * `npx tsx test/bench/cpu-profile.ts FILE.cpuprofile [TOP]`.
 */
interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  /** Main-thread time that was not idle within the window, ms. */
  busyMs: number;
  /** The window's length, ms. */
  windowMs: number;
  /** [function at file:line, self ms], most first. */
  top: Array<[string, number]>;
  /** [where the code lives, self ms], most first. */
  byPlace: Array<[string, number]>;
}

/** The main thread's profile in `dir` (node names them CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile; the main thread is 0). */
export async function mainThreadProfile(dir: string): Promise<string | undefined> {
  const files = (await readdir(dir)).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f)).sort();
  return files.length ? join(dir, files.at(-1)!) : undefined;
}

function place(url: string, name: string): string {
  if (name === '(garbage collector)') return '(garbage collector)';
  if (name === '(program)') return '(program: native, outside JS)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `npm ${nm[1]}`;
  const dist = /\/dist\/(.+)\.js$/.exec(url);
  if (dist) return `src/${dist[1]}`;
  if (url.startsWith('node:')) return url.replace(/^node:internal\//, 'node:');
  return url ? url.replace(/^file:\/\/.*\//, '') : '(native)';
}

function label(n: Node): string {
  const f = n.callFrame;
  const url = f.url.replace(/^file:\/\/.*\/(node_modules|dist)\//, '$1/').replace(/^node:internal\//, 'node:');
  return `${f.functionName || '(anonymous)'}${url ? ` ${url}:${f.lineNumber + 1}` : ''}`;
}

/**
 * Summarises a profile over the samples taken `fromEndMs` to `toEndMs`
 * before the profile ended (the process was stopped right after the run:
 * its end is the one clock both sides share), or over all of it.
 */
export async function summariseProfile(file: string, window?: { fromEndMs: number; toEndMs: number }, topN = 15): Promise<ProfileSummary> {
  const prof = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const lo = window ? prof.endTime - window.fromEndMs * 1000 : -Infinity;
  const hi = window ? prof.endTime - window.toEndMs * 1000 : Infinity;
  const self = new Map<string, number>();
  const places = new Map<string, number>();
  let at = prof.startTime;
  let busy = 0;
  prof.samples.forEach((id, i) => {
    const dt = prof.timeDeltas[i] ?? 0;
    at += dt;
    if (at < lo || at > hi) return;
    const n = byId.get(id)!;
    if (n.callFrame.functionName === '(idle)') return;
    busy += dt;
    const k = label(n);
    self.set(k, (self.get(k) ?? 0) + dt);
    const p = place(n.callFrame.url, n.callFrame.functionName);
    places.set(p, (places.get(p) ?? 0) + dt);
  });
  const ms = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).map(([k, us]) => [k, us / 1000] as [string, number]);
  const windowMs = window ? window.fromEndMs - window.toEndMs : (prof.endTime - prof.startTime) / 1000;
  return { busyMs: busy / 1000, windowMs, top: ms(self).slice(0, topN), byPlace: ms(places).slice(0, topN) };
}

/** A summary as markdown lines: where the busy time went, per path served. */
export function describeProfile(s: ProfileSummary, paths: number): string {
  const pct = (x: number) => `${((x / s.busyMs) * 100).toFixed(1)}%`;
  return [
    `Main thread busy ${s.busyMs.toFixed(0)} ms of ${s.windowMs.toFixed(0)} ms (${(s.busyMs / paths).toFixed(2)} ms per path).`,
    '',
    '| self time: function | ms | share |',
    '| --- | --- | --- |',
    ...s.top.map(([k, v]) => `| \`${k}\` | ${v.toFixed(1)} | ${pct(v)} |`),
    '',
    '| self time: where the code lives | ms | share |',
    '| --- | --- | --- |',
    ...s.byPlace.map(([k, v]) => `| ${k} | ${v.toFixed(1)} | ${pct(v)} |`),
  ].join('\n');
}

if (process.argv[1]?.endsWith('cpu-profile.ts') && process.argv[2]) {
  const s = await summariseProfile(process.argv[2], undefined, Number(process.argv[3] ?? 25));
  process.stdout.write(describeProfile(s, 1) + '\n');
}
