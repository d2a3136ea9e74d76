import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildLayeredClosure, type LayeredClosure, type LayeredShape } from './closure.js';
import type { Link } from './link.js';
import { Nginx } from './nginx.js';
import { generateKey, makeStaticCache, removeDir, tempDir, type CacheKey } from './nix.js';
import { piOnItsOwnCpu } from './pi-priority.js';
import { startProxy, type ProxyProcess } from './proxy.js';

/**
 * A house for tests of the Pi over a link, with real Nix: a layered closure
 * built by real Nix, the Pi (real nginx, xz, signed by its key) and an
 * upstream that also has it (nginx, zstd, its own key), both on 127.0.0.1.
 * The Pi and the link are other machines: from here on, this process and
 * the Pi's nginx run at a higher priority than the laptop (pi-priority.ts),
 * and the laptop's processes start through `laptop`.
 */
export interface PiHome {
  dir: string;
  closure: LayeredClosure;
  piKey: CacheKey;
  upKey: CacheKey;
  trustedKeys: string[];
  pi: Nginx;
  upstream: Nginx;
  /** Command prefix for the laptop's processes (Nix): the usual priority. */
  laptop: string[];
  /** The laptop's proxy as the README starts it (mDNS off), the Pi behind `link`, upstream direct. */
  proxyBehind(link: Link): Promise<ProxyProcess>;
  /** The Pi's whole-NAR GETs (not a probe's Range), with when each began. */
  piNarReads(): Promise<NarRead[]>;
  cleanup(): Promise<void>;
}

export interface NarRead {
  /** When nginx began the request (ms since the epoch): `$msec - $request_time`, as nginx logs a request when it ends. */
  startedAt: number;
  uri: string;
}

export async function piHome(salt: string, shape: LayeredShape): Promise<PiHome> {
  const dir = await tempDir(salt);
  const closure = await buildLayeredClosure(salt, shape);
  const [piKey, upKey] = await Promise.all([generateKey(dir, 'pi.lan-1'), generateKey(dir, 'upstream-1')]);
  await Promise.all([makeStaticCache(join(dir, 'pi'), [closure.root], piKey, 'xz'), makeStaticCache(join(dir, 'up'), [closure.root], upKey, 'zstd')]);
  const priority = piOnItsOwnCpu();
  const piWork = await tempDir(`${salt}-pi-nginx`);
  const upWork = await tempDir(`${salt}-up-nginx`);
  const timedLog = join(piWork, 'timed.log');
  const pi = await Nginx.start({ root: join(dir, 'pi'), workDir: piWork, extraHttp: `log_format timed '$msec $request_time $request_method $uri $status'; access_log ${timedLog} timed;` });
  const upstream = await Nginx.start({ root: join(dir, 'up'), workDir: upWork });
  const trustedKeys = [piKey.publicKey, upKey.publicKey];
  return {
    dir,
    closure,
    piKey,
    upKey,
    trustedKeys,
    pi,
    upstream,
    laptop: priority.laptop,
    proxyBehind: (link) => startProxy(['--no-mdns', '--log-level', 'info', '--lan', link.url, '--upstream', upstream.url, ...trustedKeys.flatMap((k) => ['--trusted-public-key', k])], { wrapper: priority.laptop }),
    async piNarReads() {
      const text = await readFile(timedLog, 'utf8').catch(() => '');
      return text
        .split('\n')
        .map((line) => line.split(' '))
        .filter(([, , method, uri, status]) => method === 'GET' && uri?.startsWith('/nar/') && status === '200')
        .map(([msec, requestTime, , uri]) => ({ startedAt: Math.round((Number(msec) - Number(requestTime)) * 1000), uri: uri! }));
    },
    async cleanup() {
      await Promise.all([pi.stop(), upstream.stop()]);
      priority.restore();
      await Promise.all([removeDir(dir), removeDir(piWork), removeDir(upWork)]);
    },
  };
}
