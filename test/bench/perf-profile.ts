import { once } from 'node:events';
import { run, startProcess, stopProcess } from '../helpers/proc.js';

/**
 * Linux `perf` on a running process: samples by CPU time spent (not wall
 * time, as V8's --cpu-prof does, which on a loaded machine charges a
 * descheduled thread's wait to whatever was on its stack). With the proxy
 * started under `node --perf-basic-prof --interpreted-frames-native-stack`
 * its JavaScript functions have names in the report.
 */
export const PERF_NODE_OPTIONS = '--perf-basic-prof --interpreted-frames-native-stack';

export interface PerfRecording {
  stop(): Promise<void>;
}

/** Starts sampling every thread of `pid` (children not included) into `file`. */
export async function perfRecord(pid: number, file: string): Promise<PerfRecording> {
  // --no-inherit: the proxy's own threads, not the xz processes it starts meanwhile (their CPU is counted apart).
  const child = startProcess('perf', ['record', '-F', '1999', '--no-inherit', '-p', String(pid), '-o', file]);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // perf prints nothing when it starts; give it a moment to attach (bounded, event: its first write or 300 ms).
  await Promise.race([once(child.stderr!, 'data'), new Promise((r) => setTimeout(r, 300))]);
  if (child.exitCode !== null) throw new Error(`perf record exited ${child.exitCode}: ${err}`);
  return { stop: () => stopProcess(child, 'SIGINT', 10_000) };
}

/** The report's top entries: [symbol (or DSO), percent of samples], most first. */
export async function perfTop(file: string, sort: 'sym' | 'dso', n = 25): Promise<Array<[string, number]>> {
  const res = await run('perf', ['report', '-i', file, '--stdio', '--no-children', '--sort', sort, '--percent-limit', '0.3'], { timeoutMs: 120_000 });
  if (res.code !== 0) throw new Error(`perf report: ${res.stderr.slice(-400)}`);
  const rows: Array<[string, number]> = [];
  for (const line of res.stdout.split('\n')) {
    const m = /^\s+([\d.]+)%\s+(?:\[[.kj]\]\s+)?(.+?)\s*$/.exec(line);
    if (m) rows.push([m[2]!.replace(/^(LazyCompile|Function|JS|Builtin):[*~^]?/, ''), Number(m[1])]);
  }
  return rows.slice(0, n);
}

/** What a sample was doing, by its binary and symbol. */
function kindOf(dso: string, sym: string): string {
  if (dso.includes('kernel')) return 'the kernel (sockets, pipes, waking threads)';
  if (/v8::internal::(.*(Mark|Sweep|Scaveng|Evacuat|Compact|FreeList|Remembered|Slot|Page|Concurrent|MemoryAllocator|BodyDescriptor|Visitor|Heap|GC|Worklist|ArrayBufferSweeper))|SizeFromMap|heap::base|cppgc/.test(sym)) return 'garbage collection';
  if (/fe_|ge_|x25519|ed25519|sha256|sha512|EVP|OPENSSL|ossl|CRYPTO|BN_/.test(sym)) return 'crypto (Ed25519 checks, NAR hashes)';
  if (/v8::internal::(compiler|maglev|baseline|interpreter|Parser|Scanner|Bytecode|Turbo|Compil)|Compile/.test(sym)) return 'compiling JavaScript';
  if (dso.startsWith('[JIT]') || sym.startsWith('JS:') || sym.startsWith('Builtins_') || sym.startsWith("'") || sym.startsWith('*')) return 'JavaScript';
  if (dso.startsWith('libc')) return 'libc (malloc, memcpy)';
  if (dso === 'node') return "Node's and V8's C++ (bindings, streams, timers)";
  return 'other';
}

/** The samples by what they were doing, as [kind, percent], most first. */
export async function perfKinds(file: string): Promise<Array<[string, number]>> {
  const res = await run('perf', ['report', '-i', file, '--stdio', '--no-children', '--sort', 'dso,sym', '--percent-limit', '0'], { timeoutMs: 120_000 });
  if (res.code !== 0) throw new Error(`perf report: ${res.stderr.slice(-400)}`);
  const kinds = new Map<string, number>();
  for (const line of res.stdout.split('\n')) {
    const m = /^\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.+?)\s*$/.exec(line);
    if (m) kinds.set(kindOf(m[2]!, m[3]!), (kinds.get(kindOf(m[2]!, m[3]!)) ?? 0) + Number(m[1]));
  }
  return [...kinds].sort((a, b) => b[1] - a[1]);
}

/** Markdown for a report: the samples by kind, top symbols and DSOs as share of the proxy's samples, with the CPU ms per path they amount to. */
export function describePerf(sym: Array<[string, number]>, dso: Array<[string, number]>, cpuMsPerPath: number, kinds: Array<[string, number]> = []): string {
  const ms = (pct: number) => ((pct / 100) * cpuMsPerPath).toFixed(3);
  return [
    ...(kinds.length ? ['| perf: what the proxy was doing | share | ms/path |', '| --- | --- | --- |', ...kinds.map(([k, v]) => `| ${k} | ${v.toFixed(1)}% | ${ms(v)} |`), ''] : []),
    '| perf, self: symbol | share | ms/path |',
    '| --- | --- | --- |',
    ...sym.map(([k, v]) => `| \`${k.slice(0, 110).replace(/\|/g, '\\|')}\` | ${v.toFixed(1)}% | ${ms(v)} |`),
    '',
    '| perf, self: binary | share | ms/path |',
    '| --- | --- | --- |',
    ...dso.map(([k, v]) => `| ${k} | ${v.toFixed(1)}% | ${ms(v)} |`),
  ].join('\n');
}
