import { errorMessage } from '../errors.js';
import type { HealthResponse, ShareSnapshot, StatsResponse } from '../api.js';
import type { Finding } from './finding.js';

export interface ProxyView {
  health?: HealthResponse;
  stats?: StatsResponse;
  /** `GET /_/share` (absent from proxies older than sharing). */
  share?: ShareSnapshot | { enabled: false };
  error?: string;
}

async function getJson<T>(url: string, timeoutMs: number): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return (await res.json()) as T;
}

export async function askProxy(proxyUrl: string, timeoutMs = 3000): Promise<ProxyView> {
  const base = proxyUrl.endsWith('/') ? proxyUrl : `${proxyUrl}/`;
  try {
    const health = await getJson<ProxyView['health']>(new URL('_/health', base).toString(), timeoutMs);
    const stats = await getJson<StatsResponse>(new URL('_/stats', base).toString(), timeoutMs).catch(() => undefined);
    const share = await getJson<ShareSnapshot | { enabled: false }>(new URL('_/share', base).toString(), timeoutMs).catch(() => undefined);
    return { health, ...(stats ? { stats } : {}), ...(share ? { share } : {}) };
  } catch (err) {
    return { error: errorMessage(err) };
  }
}

export function checkProxy(proxyUrl: string, view: ProxyView): Finding {
  if (view.health?.ok) return { id: 'proxy-running', level: 'ok', message: `the proxy answers at ${proxyUrl}` };
  const cause = (view.error ?? 'no answer').replace(/^fetch failed$/, 'connection failed');
  return {
    id: 'proxy-not-running',
    level: 'fail',
    message: `the proxy does not answer at ${proxyUrl}/_/health (${cause}); Nix will get nothing from its substituter`,
    fix: 'start it: `nix-lan-cache serve` (or `systemctl start nix-lan-cache`); if it listens elsewhere, pass --url',
  };
}

/** Why a cache's nix-cache-info cannot be read, or undefined when it can. */
async function whyNotReachable(url: string, timeoutMs: number): Promise<string | undefined> {
  try {
    const res = await fetch(new URL('nix-cache-info', url), { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    return res.status !== 200 || !text.includes('StoreDir:') ? `HTTP ${res.status}${res.status === 200 ? ', not a binary cache' : ''}` : undefined;
  } catch (err) {
    const why = errorMessage(err).replace(/^fetch failed$/, 'connection failed');
    const cause = (err as { cause?: unknown }).cause;
    return cause ? `${why}: ${errorMessage(cause)}` : why;
  }
}

/** Reaches every origin directly (nix-cache-info; a bucket: the proxy's view of it) and reads trust problems from the proxy's counters. */
export async function checkOrigins(view: ProxyView, timeoutMs = 2000): Promise<Finding[]> {
  const out: Finding[] = [];
  for (const o of view.health?.origins ?? []) {
    // A bucket answers only signed requests, with the proxy's credentials: its circuit says whether it does.
    const reachable = o.name.startsWith('s3://')
      ? o.state === 'open'
        ? `${o.reason} (as the proxy sees it: a bucket answers only its signed requests)`
        : undefined
      : await whyNotReachable(o.url, timeoutMs);
    if (reachable === undefined) {
      out.push({ id: `origin-reachable`, level: 'ok', message: `${o.kind} cache ${o.name} (${o.url}) answers${o.state === 'open' ? ", but the proxy still counts it as down (it re-checks it in the background)" : ''}` });
    } else {
      out.push({
        id: 'origin-unreachable',
        level: o.kind === 'upstream' ? 'fail' : 'warn',
        message: `${o.kind} cache ${o.name} (${o.url}) does not answer: ${reachable}`,
        fix:
          o.kind === 'lan'
            ? 'fine while you are away from home; at home, check the Pi is on and nginx serves the cache directory'
            : o.kind === 'peer'
              ? 'fine when that machine is asleep or away; otherwise check it runs `serve --share` and its firewall lets the share port in'
              : 'check the internet connection and the --upstream URL',
      });
    }
    const c = view.stats?.periods.sinceInstall.origins[o.name];
    if (c && c.narinfo.untrusted > 0) {
      out.push({
        id: 'origin-untrusted',
        level: 'warn',
        message: `${o.name} served ${c.narinfo.untrusted} narinfo(s) signed by no key the proxy trusts (treated as absent)`,
        fix: `add its signing key to the proxy: --trusted-public-key NAME:BASE64 (and to Nix's trusted-public-keys)`,
      });
    }
  }
  return out;
}
