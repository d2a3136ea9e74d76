import type { Finding } from './finding.js';
import { list, type NixConfig } from './nix-config.js';

/** Compares cache URLs the way a person means them: scheme, host (localhost = 127.0.0.1), port, path; no trailing slash. */
export function sameCache(a: string, b: string): boolean {
  const norm = (u: string) => {
    try {
      const p = new URL(u);
      const host = p.hostname === 'localhost' ? '127.0.0.1' : p.hostname;
      const port = p.port || (p.protocol === 'https:' ? '443' : p.protocol === 'http:' ? '80' : '');
      return `${p.protocol}//${host}:${port}${p.pathname.replace(/\/+$/, '')}`;
    } catch {
      return u.replace(/\/+$/, '');
    }
  };
  return norm(a) === norm(b);
}

export interface Expected {
  proxyUrl: string;
  lan: string[];
  upstream: string[];
  /** Keys the proxy trusts: Nix must trust them too, the proxy passes their signatures through. */
  keys: string[];
}

export function checkSubstituters(nix: NixConfig, want: Expected): Finding[] {
  const subs = list(nix.settings['substituters']);
  const out: Finding[] = [];
  const others = subs.filter((s) => !sameCache(s, want.proxyUrl));
  if (others.length === subs.length) {
    out.push({
      id: 'substituter-missing',
      level: 'fail',
      message: `Nix does not use the proxy: substituters = ${subs.join(' ') || '(empty)'}`,
      fix: `in nix.conf: substituters = ${want.proxyUrl}`,
    });
  } else if (others.length === 0) {
    out.push({ id: 'substituter-ok', level: 'ok', message: `the proxy ${want.proxyUrl} is Nix's only substituter` });
  }
  for (const s of others) {
    if (want.lan.some((l) => sameCache(l, s))) {
      out.push({
        id: 'substituter-lan-direct',
        level: 'fail',
        message: `nix.conf lists the LAN cache ${s} directly: when it is away Nix retries it for 4-15 s per command, or hangs on one that never answers`,
        fix: `remove ${s} from substituters (and extra-substituters); the proxy asks it for you. Keep only: substituters = ${want.proxyUrl}`,
      });
    } else if (want.upstream.some((u) => sameCache(u, s))) {
      out.push({
        id: 'substituter-upstream-direct',
        level: 'warn',
        message: `nix.conf also lists the upstream ${s}: Nix may fetch from it directly and skip the Pi`,
        fix: `remove ${s} from substituters; the proxy falls through to it. Keep only: substituters = ${want.proxyUrl}`,
      });
    } else {
      out.push({
        id: 'substituter-other',
        level: 'warn',
        message: `nix.conf also lists ${s}, which the proxy does not know`,
        fix: `if you need it, give it to the proxy (--upstream ${s} or --lan ${s}) and remove it from nix.conf`,
      });
    }
  }
  return out;
}

export function checkKeys(nix: NixConfig, want: Expected): Finding[] {
  const trusted = list(nix.settings['trusted-public-keys']);
  const out: Finding[] = [];
  for (const key of want.keys) {
    const name = key.split(':')[0]!;
    if (trusted.includes(key)) {
      out.push({ id: 'key-trusted', level: 'ok', message: `Nix trusts ${name}` });
      continue;
    }
    const sameName = trusted.find((t) => t.split(':')[0] === name);
    out.push({
      id: 'key-missing',
      level: 'fail',
      message: sameName
        ? `Nix trusts a different key named ${name} than the proxy does: paths signed with it will be refused`
        : `Nix does not trust ${name}: paths signed only by it will be refused by Nix ("no signature by a trusted key"), and Nix builds them instead`,
      fix: `add it to nix.conf: trusted-public-keys = ${[...trusted.filter((t) => t !== sameName), key].join(' ')}`,
    });
  }
  if (nix.settings['require-sigs'] === false || nix.settings['require-sigs'] === 'false') {
    out.push({
      id: 'require-sigs-off',
      level: 'warn',
      message: 'require-sigs = false: Nix accepts unsigned paths from any substituter',
      fix: 'set require-sigs = true (the default) in nix.conf',
    });
  }
  return out;
}

/** Above this, a narinfo the proxy answered 404 for (Pi away, path only on the Pi) stays hidden too long. */
export const MAX_NEGATIVE_TTL = 300;
/** What the NixOS module sets and `serve` prints. */
export const RECOMMENDED_NEGATIVE_TTL = 60;

export function checkNegativeTtl(nix: NixConfig, want: Expected): Finding {
  const raw = nix.settings['narinfo-cache-negative-ttl'];
  const ttl = Number(raw ?? 3600);
  if (Number.isFinite(ttl) && ttl <= MAX_NEGATIVE_TTL) {
    return { id: 'negative-ttl-ok', level: 'ok', message: `narinfo-cache-negative-ttl = ${ttl} s` };
  }
  return {
    id: 'negative-ttl-long',
    level: 'warn',
    message:
      `narinfo-cache-negative-ttl = ${String(raw ?? 3600)} s: when the proxy answers "not found" (the Pi was away, or the path was pushed to it later), ` +
      `Nix remembers that for ${Math.round(ttl / 60)} min and builds or downloads instead of asking again${want.lan.length ? '' : ' (matters once you have a LAN cache)'}`,
    fix: `in nix.conf: narinfo-cache-negative-ttl = ${RECOMMENDED_NEGATIVE_TTL}`,
  };
}
