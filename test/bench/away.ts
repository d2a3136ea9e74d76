import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { household, type Household } from '../helpers/scenario.js';
import { blackhole, freePort } from '../helpers/ports.js';
import { startProxy } from '../helpers/proxy.js';
import type { RunResult } from '../helpers/proc.js';
import { startPeer } from './peer.js';
import { log, median, summary, table, type CaseReport } from './util.js';

export interface AwayOptions {
  dir: string;
  /** Paths in the closure, root included. */
  paths: number;
  rounds: number;
  timeoutMs: number;
}

const SCENARIOS = ['(a) Pi up', '(b) Pi refused', '(c) Pi blackholed'] as const;
type Scenario = (typeof SCENARIOS)[number];
const SIDES = ['proxy', 'Nix alone', 'nginx peer'] as const;
type Side = (typeof SIDES)[number];

interface Cell {
  ms: number[];
  timeouts: number;
  failures: string[];
}

/**
 * Case 3 (and the peer of case 4): real Nix substitutes a closure of small
 * paths into a fresh chroot store with a fresh narinfo disk cache (a laptop
 * that never looked these paths up), with the Pi up, refusing connections or
 * accepting them and never answering.
 */
export async function runAway(o: AwayOptions): Promise<CaseReport> {
  await mkdir(o.dir, { recursive: true });
  log(`case 3: building a ${o.paths}-path closure with Nix and the Pi (xz) and upstream (zstd) caches`);
  const leaves = Array.from({ length: o.paths - 1 }, (_, i) => ({ name: `leaf-${i}`, size: 1024 + i }));
  const h: Household = await household(`bench-away-${Date.now()}`, leaves);
  const hole = await blackhole();
  const cells = new Map<string, Cell>();
  const cell = (side: Side, s: Scenario) => {
    const k = `${side}|${s}`;
    if (!cells.has(k)) cells.set(k, { ms: [], timeouts: 0, failures: [] });
    return cells.get(k)!;
  };
  let n = 0;
  try {
    const refusedUrl = `http://127.0.0.1:${await freePort()}/`;
    const piUrl: Record<Scenario, string> = { '(a) Pi up': h.pi.url, '(b) Pi refused': refusedUrl, '(c) Pi blackholed': hole.url };
    const keys = h.trustedKeys.flatMap((k) => ['--trusted-public-key', k]);
    const record = (side: Side, s: Scenario, res: RunResult) => {
      const c = cell(side, s);
      if (res.code === null) c.timeouts++;
      else if (res.code !== 0) c.failures.push(res.stderr.trim().split('\n').slice(-1)[0] ?? `exit ${res.code}`);
      else c.ms.push(res.ms);
      log(`  ${side} ${s}: ${res.code === null ? `> ${o.timeoutMs / 1000} s (timed out)` : res.code === 0 ? `${(res.ms / 1000).toFixed(2)} s` : `FAILED (exit ${res.code})`}`);
    };
    for (let r = 0; r < o.rounds; r++) {
      log(`case 3 round ${r + 1}/${o.rounds}`);
      for (const s of SCENARIOS) {
        // A fresh proxy each time: the first command after the Pi went away, nothing learnt yet.
        const proxy = await startProxy(['--no-mdns', '--log-level', 'info', '--lan', piUrl[s], '--upstream', h.upstream.url, ...keys]);
        try {
          record('proxy', s, await h.fetch(`${proxy.url}/`, { timeoutMs: o.timeoutMs }));
        } finally {
          await proxy.stop();
        }
        // Nix alone waits the whole timeout on a blackholed Pi: once is enough to show it.
        if (!(s === '(c) Pi blackholed' && r > 0)) record('Nix alone', s, await h.fetch(`${piUrl[s]} ${h.upstream.url}`, { timeoutMs: o.timeoutMs }));
        const peer = await startPeer(join(o.dir, `peer-${++n}`), piUrl[s], h.upstream.url);
        try {
          record('nginx peer', s, await h.fetch(peer.url, { timeoutMs: o.timeoutMs }));
        } finally {
          await peer.stop();
        }
      }
    }
  } finally {
    await hole.close();
    await h.cleanup();
  }

  const show = (c: Cell) => {
    const parts: string[] = [];
    if (c.ms.length) parts.push(summary(c.ms.map((x) => x / 1000), 2, ' s'));
    if (c.timeouts) parts.push(`> ${o.timeoutMs / 1000} s (timed out${c.timeouts > 1 ? ` ×${c.timeouts}` : ''})`);
    if (c.failures.length) parts.push(`failed ×${c.failures.length}: ${c.failures[0]!.slice(0, 120).replace(/\|/g, '/')}`);
    return parts.join('; ') || 'n/a';
  };
  const delta = (side: Side, s: Scenario) => {
    const a = cell(side, '(a) Pi up');
    const c = cell(side, s);
    if (s === '(a) Pi up') return '';
    if (c.timeouts || c.failures.length || !c.ms.length || !a.ms.length) return c.timeouts ? '—' : 'n/a';
    const d = (median(c.ms) - median(a.ms)) / 1000;
    return `${d < 0 ? '−' : '+'}${Math.abs(d).toFixed(2)} s`;
  };
  const proxyOk = (['(b) Pi refused', '(c) Pi blackholed'] as const).every((s) => {
    const c = cell('proxy', s);
    return c.ms.length > 0 && !c.timeouts && !c.failures.length && median(c.ms) - median(cell('proxy', '(a) Pi up').ms) <= 500;
  });
  return {
    title: '3. Laptop away (real Nix, 200-path closure)',
    markdown: [
      `A closure of ${o.paths} paths (${o.paths - 1} leaves of ~1 KiB of random bytes and a root referencing them), built by real Nix; the Pi's cache is xz, the upstream's zstd, both made by \`nix copy\` and signed. Each run is \`nix-store --store FRESH_DIR -r ROOT\` with a fresh narinfo disk cache (\`XDG_CACHE_HOME\`), timed from start to exit, killed after ${o.timeoutMs / 1000} s.`,
      `- **proxy**: a fresh \`nix-lan-cache serve --lan PI --upstream UP\` per run (the first command after the Pi went away; startup not counted); Nix's only substituter is the proxy.`,
      `- **Nix alone**: \`substituters = PI UP\`. With a blackholed Pi it was run once only (it hangs until killed).`,
      `- **nginx peer**: a fresh peer nginx per run; Nix's only substituter is the peer.`,
      `- (b) points at a port nothing listens on; (c) at a server that accepts and never answers. ${o.rounds} rounds, sides alternating.`,
      '',
      table(
        ['side', ...SCENARIOS.flatMap((s) => (s === '(a) Pi up' ? [s] : [s, 'vs (a)']))],
        SIDES.map((side) => [side, ...SCENARIOS.flatMap((s) => (s === '(a) Pi up' ? [show(cell(side, s))] : [show(cell(side, s)), delta(side, s)]))]),
      ),
      '',
      `Goal: with the proxy, (b) and (c) within 0.5 s of (a): **${proxyOk ? 'met' : 'NOT met'}**.`,
      '',
      "With the Pi up, the proxy costs one more HTTP hop per request (about 0.5 ms of Node on this machine, the same as a bare undici pipe; see case 1). Nix 2.8 substitutes one path at a time with its default `max-jobs = 1`, so for 200 tiny paths the hops add up; with `--max-jobs 16` (NixOS's default is `auto`) the same closure took 0.17–0.28 s directly and 0.23–0.36 s through the proxy in a separate check (`nix-store -r --max-jobs 16`, 3 rounds). A blackholed Pi costs the 200 ms hedge delay once: slower LAN lookups are not waited on alone, and the next ones ask upstream alongside until the Pi answers or its circuit opens.",
    ].join('\n'),
  };
}
