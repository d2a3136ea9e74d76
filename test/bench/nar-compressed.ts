import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createDecompressor } from '../../src/nar/decompress.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { Nginx } from '../helpers/nginx.js';
import { generateKey, makeStaticCache, nixEnv, substitute } from '../helpers/nix.js';
import { run, runOk } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { log, median, ratio, summary, table, type CaseReport } from './util.js';

export interface NarCompressedOptions {
  dir: string;
  /** Directories copied into store paths: real files, so the NARs compress as real ones do. */
  trees: string[];
  smallLeaves: number;
  rounds: number;
}

const SIDES = ['Nix reads the Pi (xz) directly', 'Nix through the proxy, Pi (xz)', 'Nix reads upstream (zstd) directly', 'Nix through the proxy, upstream (zstd) only'] as const;
type Side = (typeof SIDES)[number];

/** A closure of real files (copies of system directories) and a few small random leaves, built by real Nix. */
async function buildRealClosure(salt: string, trees: string[], small: number): Promise<{ root: string; paths: string[] }> {
  const drv = (name: string, script: string) =>
    `derivation { name = ${JSON.stringify(name)}; system = builtins.currentSystem; builder = "/bin/sh"; salt = ${JSON.stringify(salt)}; args = [ "-c" ${JSON.stringify(script)} ]; }`;
  const leaves = [
    ...trees.map((t, i) => drv(`tree-${i}`, `/bin/cp -r ${t} $out`)),
    ...Array.from({ length: small }, (_, i) => drv(`small-${i}`, `/usr/bin/head -c ${4096 + i} /dev/urandom > $out`)),
  ];
  const expr = `let leaves = [ ${leaves.map((e) => `(${e})`).join(' ')} ]; in ${drv(`${salt}-root`, `echo ${leaves.map((_, i) => `\${builtins.elemAt leaves ${i}}`).join(' ')} > $out`)}`;
  const root = (await runOk('nix-build', ['--no-out-link', '-E', expr], { env: nixEnv(), timeoutMs: 600_000 })).trim();
  const paths = (await runOk('nix-store', ['-qR', root], { env: nixEnv() })).trim().split('\n');
  return { root, paths };
}

/** MiB/s of NAR out of one decompressor (as the proxy runs it: file in, sha256 of the output). */
async function decompressorSpeed(file: string, compression: string, narSize: number): Promise<number> {
  const dec = createDecompressor(compression)!;
  const started = performance.now();
  const hash = createHash('sha256');
  let n = 0;
  const reading = pipeline(createReadStream(file), dec.input);
  for await (const chunk of dec.output as AsyncIterable<Buffer>) {
    hash.update(chunk);
    n += chunk.length;
  }
  await reading;
  if (n !== narSize) throw new Error(`${compression}: ${n} bytes out, NarSize ${narSize}`);
  return n / 2 ** 20 / ((performance.now() - started) / 1000);
}

/**
 * Case 7 (issue 13): NARs that are real xz and zstd files, substituted by
 * real Nix, directly and through the proxy (which now decompresses them and
 * hands Nix `Compression: none`), and each decompressor's speed.
 */
export async function runNarCompressed(o: NarCompressedOptions): Promise<CaseReport> {
  await mkdir(o.dir, { recursive: true });
  log(`case 7: building a closure of ${o.trees.join(', ')} and ${o.smallLeaves} small leaves; caching it as xz (Pi) and zstd (upstream)`);
  const closure = await buildRealClosure(`bench-nar-${Date.now()}`, o.trees, o.smallLeaves);
  const piKey = await generateKey(o.dir, 'pi.bench-1');
  const upKey = await generateKey(o.dir, 'upstream.bench-1');
  const piDir = join(o.dir, 'pi-cache');
  const upDir = join(o.dir, 'upstream-cache');
  await Promise.all([makeStaticCache(piDir, [closure.root], piKey, 'xz'), makeStaticCache(upDir, [closure.root], upKey, 'zstd')]);
  for (const d of ['pi-nginx', 'up-nginx']) await mkdir(join(o.dir, d));
  const pi = await Nginx.start({ root: piDir, workDir: join(o.dir, 'pi-nginx') });
  const upstream = await Nginx.start({ root: upDir, workDir: join(o.dir, 'up-nginx') });
  const keys = [piKey.publicKey, upKey.publicKey];
  const narBytes = await sum(piDir, (i) => i.narSize);
  const xzBytes = await sum(piDir, (i) => i.fileSize ?? 0);
  const zstdBytes = await sum(upDir, (i) => i.fileSize ?? 0);
  const times: Record<Side, number[]> = Object.fromEntries(SIDES.map((s) => [s, []])) as unknown as Record<Side, number[]>;
  let n = 0;
  try {
    for (let round = 0; round <= o.rounds; round++) {
      for (const side of SIDES) {
        const proxyArgs = side === SIDES[1] ? ['--lan', pi.url, '--upstream', upstream.url] : side === SIDES[3] ? ['--upstream', upstream.url] : undefined;
        const proxy = proxyArgs ? await startProxy(['--no-mdns', '--log-level', 'info', ...proxyArgs, ...keys.flatMap((k) => ['--trusted-public-key', k])]) : undefined;
        const substituter = proxy?.url ?? (side === SIDES[0] ? pi.url : upstream.url);
        const store = join(o.dir, `client-${++n}`);
        try {
          const res = await substitute(store, [closure.root], substituter, { xdgCache: join(o.dir, `xdg-${n}`), trustedKeys: keys, timeoutMs: 600_000 });
          if (res.code !== 0) throw new Error(`${side}: nix-store -r failed: ${res.stderr.slice(-2000)}`);
          if (round > 0) times[side].push(res.ms / 1000);
          log(`case 7 ${round === 0 ? 'warm-up' : `round ${round}`}: ${side}: ${(res.ms / 1000).toFixed(2)} s`);
        } finally {
          await proxy?.stop();
          await run('rm', ['-rf', store]);
        }
      }
    }
    const big = await biggest(piDir);
    const bigUp = await biggest(upDir, big.storePath);
    const speeds: Array<[string, number[]]> = [];
    const bz2 = join(o.dir, 'big.nar.bz2');
    await run('sh', ['-c', `nix-store --dump '${big.storePath}' | bzip2 -c > '${bz2}'`], { env: nixEnv(), timeoutMs: 600_000 });
    for (const [label, file, c] of [['xz (`xz -dc` process)', join(piDir, big.url), 'xz'], ['zstd (Node zlib)', join(upDir, bigUp.url), 'zstd'], ['bzip2 (`bzip2 -dc` process)', bz2, 'bzip2']] as const) {
      const xs: number[] = [];
      for (let i = 0; i < 3; i++) xs.push(await decompressorSpeed(file, c, big.narSize));
      speeds.push([label, xs]);
    }
    const rows = SIDES.map((s) => [s, summary(times[s]), s === SIDES[1] ? ratio(times[s], times[SIDES[0]]) : s === SIDES[3] ? ratio(times[s], times[SIDES[2]]) : '1.00×']);
    return {
      title: '7. Compressed NARs through the proxy (real Nix, real xz and zstd files)',
      markdown: [
        `A closure of ${closure.paths.length} paths built by real Nix: copies of ${o.trees.map((t) => `\`${t}\``).join(', ')} (real files) and ${o.smallLeaves} small random leaves; ${mib(narBytes)} of NAR, ${mib(xzBytes)} as xz on the Pi and ${mib(zstdBytes)} as zstd upstream (both \`nix copy\`, signed).`,
        `Each run is \`nix-store --store FRESH -r ROOT\` with a fresh narinfo cache; through the proxy Nix gets \`Compression: none\` and the proxy decompresses; directly, Nix decompresses. ${o.rounds} rounds after a warm-up, sides alternating, a fresh proxy per run (startup not counted). Nix 2.8 substitutes one path at a time.`,
        '',
        table(['side', 'seconds, median (min–max)', 'vs the same cache direct'], rows),
        '',
        `Decompressors as the proxy runs them (\`src/nar/decompress.ts\`: file in, sha256 of the output), on the largest NAR (${mib(big.narSize)}), 3 runs:`,
        '',
        table(['decompressor', 'MiB/s of NAR out, median (min–max)'], speeds.map(([l, xs]) => [l, summary(xs, 0)])),
        '',
        'Where the time goes: through the proxy, the NAR is decompressed once, by the proxy (Nix gets `Compression: none`), and hashed as it streams (sha256 on the proxy\'s main thread); Nix then receives the uncompressed bytes over loopback. With xz the proxy\'s decompression runs on another core while Nix unpacks, so it can come out ahead of Nix alone; zstd costs Nix almost nothing to decompress, so there the proxy\'s extra hop and hashing show.',
        '',
        `Median NAR throughput through the proxy: ${(narBytes / 2 ** 20 / median(times[SIDES[1]])).toFixed(0)} MiB/s from the xz Pi, ${(narBytes / 2 ** 20 / median(times[SIDES[3]])).toFixed(0)} MiB/s from the zstd upstream (end to end, Nix unpacking included).`,
      ].join('\n'),
    };
  } finally {
    await Promise.all([pi.stop(), upstream.stop()]);
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

async function narinfos(dir: string) {
  const out = [];
  for (const name of (await readdir(dir)).filter((x) => x.endsWith('.narinfo'))) out.push(parseNarInfo(await readFile(join(dir, name), 'utf8')));
  return out;
}

async function sum(dir: string, f: (i: Awaited<ReturnType<typeof narinfos>>[number]) => number): Promise<number> {
  return (await narinfos(dir)).reduce((a, i) => a + f(i), 0);
}

async function biggest(dir: string, storePath?: string) {
  const all = await narinfos(dir);
  const pick = storePath ? all.find((i) => i.storePath === storePath)! : all.sort((a, b) => b.narSize - a.narSize)[0]!;
  await stat(join(dir, pick.url));
  return pick;
}
