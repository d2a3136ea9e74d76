import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buildLayeredClosure, type LayeredShape } from '../helpers/closure.js';
import { substituteInto } from '../helpers/laptop-store.js';
import { LINKS, startLink, type Link } from '../helpers/link.js';
import { Nginx } from '../helpers/nginx.js';
import { generateKey, makeStaticCache, removeDir, substitute, type CacheKey } from '../helpers/nix.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { log, median, ratio, summary, table, type CaseReport } from './util.js';

export interface SharingOptions {
  dir: string;
  shape: LayeredShape;
  rounds: number;
}

interface Setup {
  key: CacheKey;
  root: string;
  paths: number;
  /** The upstream (cache.nixos.org's stand-in) behind the slow link. */
  slow: Link;
  /** Laptop A's share, behind the Wi-Fi link. */
  wifi: Link;
}

let runs = 0;

/** Real Nix on a laptop substitutes the closure through that laptop's proxy, into a fresh store; seconds. */
async function fetchThrough(o: SharingOptions, s: Setup, proxy: ProxyProcess): Promise<number> {
  const n = ++runs;
  const store = join(o.dir, `client-${n}`);
  const res = await substitute(store, [s.root], proxy.url, { xdgCache: join(o.dir, `xdg-${n}`), trustedKeys: [s.key.publicKey], timeoutMs: 300_000 });
  if (res.code !== 0) throw new Error(`nix-store -r via ${proxy.url} failed (exit ${res.code}): ${res.stderr.slice(-400)}`);
  await removeDir(store);
  await removeDir(join(o.dir, `xdg-${n}`));
  return res.ms / 1000;
}

/** A laptop's proxy, fresh: the upstream behind the slow link, and `peers`. */
function laptop(s: Setup, peers: string[] = []): Promise<ProxyProcess> {
  return startProxy(['--no-mdns', ...peers.flatMap((p) => ['--peer', p]), '--upstream', s.slow.url, '--trusted-public-key', s.key.publicKey]);
}

/**
 * Case 13 (issue 24): a house without a Pi. Laptop A already holds a
 * closure it got from the upstream (so it carries the upstream's
 * signature) and shares it (`serve --share`); laptop B needs the same
 * closure. B through A's share over the Wi-Fi profile, against B alone from
 * the upstream over the slow link, and against both laptops fetching it
 * from the upstream at once over that one slow link (what a house without
 * sharing does).
 */
export async function runSharing(o: SharingOptions): Promise<CaseReport> {
  const paths = o.shape.levels * o.shape.width + 1;
  log(`case 13: building a ${paths}-path closure with Nix, an xz cache of it (the upstream), and laptop A's store holding it`);
  await mkdir(o.dir, { recursive: true });
  const closure = await buildLayeredClosure(`bench-sharing-${Date.now()}`, o.shape);
  const key = await generateKey(o.dir, 'upstream-1');
  const cacheDir = join(o.dir, 'upstream-cache');
  await makeStaticCache(cacheDir, [closure.root], key, 'xz');
  const storeA = join(o.dir, 'laptop-a-store');
  await substituteInto(storeA, [closure.root], cacheDir, key);
  await mkdir(join(o.dir, 'upstream-nginx'));
  const upstream = await Nginx.start({ root: cacheDir, workDir: join(o.dir, 'upstream-nginx') });
  const slow = await startLink({ target: { host: '127.0.0.1', port: upstream.port }, ...LINKS.slow });
  const a = await startProxy(['--no-mdns', '--share', '--share-listen', '127.0.0.1:0', '--share-store', storeA, '--upstream', slow.url, '--trusted-public-key', key.publicKey]);
  const share = new URL((a.logs.find((l) => l.event === 'share-started')?.urls as string[])[0]!);
  const wifi = await startLink({ target: { host: '127.0.0.1', port: Number(share.port) }, ...LINKS.wifi });
  const s: Setup = { key, root: closure.root, paths, slow, wifi };

  const times: Record<'peer' | 'alone' | 'both', number[]> = { peer: [], alone: [], both: [] };
  const slowBytes: Record<'peer' | 'alone' | 'both', number[]> = { peer: [], alone: [], both: [] };
  const wifiBytes: number[] = [];
  try {
    for (let round = 1; round <= o.rounds; round++) {
      log(`case 13: round ${round}/${o.rounds}`);
      {
        const b = await laptop(s, [wifi.url]);
        const [slow0, wifi0] = [slow.bytesDown(), wifi.bytesDown()];
        times.peer.push(await fetchThrough(o, s, b).finally(() => b.stop()));
        slowBytes.peer.push(slow.bytesDown() - slow0);
        wifiBytes.push(wifi.bytesDown() - wifi0);
      }
      {
        const b = await laptop(s);
        const slow0 = slow.bytesDown();
        times.alone.push(await fetchThrough(o, s, b).finally(() => b.stop()));
        slowBytes.alone.push(slow.bytesDown() - slow0);
      }
      {
        const [one, two] = [await laptop(s), await laptop(s)];
        const slow0 = slow.bytesDown();
        try {
          const both = await Promise.all([fetchThrough(o, s, one), fetchThrough(o, s, two)]);
          times.both.push(Math.max(...both));
        } finally {
          await Promise.all([one.stop(), two.stop()]);
        }
        slowBytes.both.push(slow.bytesDown() - slow0);
      }
    }
  } finally {
    await a.stop();
    await wifi.close();
    await slow.close();
    await upstream.stop();
    await removeDir(storeA);
  }

  const mb = (xs: number[]) => `${(median(xs) / 1e6).toFixed(1)} MB`;
  const rows = [
    ['B through A\'s share (Wi-Fi: 2 ms each way, 100 Mbit/s)', summary(times.peer), mb(slowBytes.peer), `${mb(wifiBytes)} (uncompressed NARs)`],
    ['B alone from the upstream (slow link: 25 ms each way, 2.5 MB/s)', summary(times.alone), mb(slowBytes.alone), '–'],
    ['A and B at once from the upstream (one slow link), until both are done', summary(times.both), mb(slowBytes.both), '–'],
  ];
  return {
    title: '13. A house without a Pi: the second laptop fetches what the first holds',
    markdown: [
      `A ${paths}-path closure (${o.shape.levels} levels of ${o.shape.width}, ${o.shape.bytes / 1000} kB of text each; layered as in cases 9–11) on an upstream nginx (xz, signed by the upstream's key: cache.nixos.org's stand-in) behind the slow-link profile of \`test/helpers/link.ts\` (${LINKS.slow.latencyMs} ms each way, ${LINKS.slow.downBytesPerSec / 1e6} MB/s down, shared). Laptop A already holds the closure in its own store (a chroot store, filled from the upstream: every path carries the upstream's signature) and runs \`serve --share --share-store A\`; its share is behind the Wi-Fi profile (${LINKS.wifi.latencyMs} ms each way, ${(LINKS.wifi.downBytesPerSec * 8) / 1e6} Mbit/s, shared). Laptop B: \`serve --peer WIFI --upstream SLOW\` (no Pi), fresh per run, and real Nix (${'`nix-store -r`'}, defaults) into a fresh store. Against it: B with no peer, from the upstream alone; and both laptops at once, each through its own proxy with no peer, from the upstream over the one slow link (what a house without sharing does). ${o.rounds} round${o.rounds > 1 ? 's' : ''}, sides in turn; seconds as median (min–max).`,
      '',
      table(['side', 'seconds', 'over the slow link', 'over Wi-Fi'], rows),
      '',
      `B through A's share: **${ratio(times.alone, times.peer)}** faster than B alone from the upstream and **${ratio(times.both, times.peer)}** faster than both laptops from it at once; ${median(slowBytes.peer) === 0 ? 'nothing crossed the slow link (the house fetched the closure once, when A got it)' : `${mb(slowBytes.peer)} still crossed the slow link`}. A's share sends NARs uncompressed (its store holds no compressed files), so B moves more bytes over the LAN than the upstream's xz files, at LAN speed.`,
    ].join('\n'),
  };
}
