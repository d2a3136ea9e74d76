import type { ServiceInstance } from './browser.js';

// Bounds, so a noisy or hostile network can't make the cache grow without end.
const MAX_INSTANCES = 64;
const MAX_HOSTS = 256;
const MAX_ADDRESSES_PER_HOST = 8;
const MAX_TXT_STRINGS = 32;
const MAX_TXT_BYTES = 1024;

/** One resource record as multicast-dns (dns-packet) decodes it; anything else in it is ignored. */
export interface MdnsRecord {
  name?: unknown;
  type?: unknown;
  ttl?: unknown;
  data?: unknown;
}

interface Timed {
  /** When the record was last received (ms). */
  receivedAt: number;
  /** Its TTL in ms. */
  ttlMs: number;
  /** When it expires (ms); a goodbye sets this to 1 s from now (RFC 6762 §10.1). */
  expiresAt: number;
}

interface InstanceRecords {
  name: string;
  ptr?: Timed;
  srv?: Timed & { target: string; port: number };
  txt?: Timed & { strings: string[] };
}

export interface Changes {
  up: ServiceInstance[];
  down: ServiceInstance[];
}

/**
 * The records of one DNS-SD service type heard on the LAN, with their TTLs
 * (PTR, SRV, TXT and A), and the instances they make up. No I/O: the browser
 * feeds it records and asks what changed. Nothing in a record can make it
 * throw or grow past its bounds.
 */
export class ServiceRecords {
  private readonly instancesByName = new Map<string, InstanceRecords>();
  private readonly hosts = new Map<string, Map<string, Timed>>();
  private readonly emitted = new Map<string, { instance: ServiceInstance; key: string }>();

  /** `ptrName`: the service type's PTR name, e.g. `_nix-cache._tcp.local`. */
  constructor(private readonly ptrName: string) {
    this.ptrName = ptrName.toLowerCase();
  }

  instances(): ServiceInstance[] {
    return [...this.emitted.values()].map((e) => e.instance);
  }

  /** Stores one record; true if it was a goodbye (TTL 0) for something we track. */
  add(rec: MdnsRecord, now: number): boolean {
    if (!rec || typeof rec.name !== 'string' || typeof rec.ttl !== 'number' || !Number.isFinite(rec.ttl) || rec.ttl < 0) return false;
    const name = rec.name.toLowerCase();
    const ttl = rec.ttl;
    const goodbye = ttl === 0;
    const timing = (previous?: Timed): Timed => {
      if (goodbye) {
        // Goodbye: expire in 1 s unless refreshed (only shortens a record we hold).
        const expiresAt = Math.min(previous?.expiresAt ?? now, now + 1000);
        return { receivedAt: previous?.receivedAt ?? now, ttlMs: previous?.ttlMs ?? 1000, expiresAt };
      }
      const ttlMs = Math.min(ttl, 7 * 86400) * 1000;
      return { receivedAt: now, ttlMs, expiresAt: now + ttlMs };
    };
    const data = rec.data;
    switch (rec.type) {
      case 'PTR': {
        if (name !== this.ptrName || typeof data !== 'string') return false;
        const instance = data.toLowerCase();
        if (!instance.endsWith(`.${this.ptrName}`)) return false;
        const entry = this.instanceEntry(instance, data, goodbye);
        if (!entry) return false;
        entry.ptr = timing(entry.ptr);
        return goodbye;
      }
      case 'SRV': {
        const srv = data as { target?: unknown; port?: unknown } | undefined;
        if (!name.endsWith(`.${this.ptrName}`) || typeof srv?.target !== 'string' || typeof srv.port !== 'number') return false;
        const entry = this.instanceEntry(name, rec.name, goodbye);
        if (!entry) return false;
        if (goodbye && entry.srv && entry.srv.target.toLowerCase() !== srv.target.toLowerCase()) return false;
        entry.srv = { ...timing(entry.srv), target: goodbye && entry.srv ? entry.srv.target : srv.target, port: goodbye && entry.srv ? entry.srv.port : srv.port };
        return goodbye;
      }
      case 'TXT': {
        if (!name.endsWith(`.${this.ptrName}`)) return false;
        const entry = this.instanceEntry(name, rec.name, goodbye);
        if (!entry) return false;
        entry.txt = { ...timing(entry.txt), strings: goodbye && entry.txt ? entry.txt.strings : txtStrings(data) };
        return goodbye;
      }
      case 'A': {
        if (typeof data !== 'string' || !/^\d{1,3}(\.\d{1,3}){3}$/.test(data)) return false;
        let addrs = this.hosts.get(name);
        if (!addrs) {
          if (goodbye || this.hosts.size >= MAX_HOSTS) return false;
          this.hosts.set(name, (addrs = new Map()));
        }
        const previous = addrs.get(data);
        if (!previous && (goodbye || addrs.size >= MAX_ADDRESSES_PER_HOST)) return false;
        // Cache-flush bits are ignored on purpose: another responder can't wipe an address we know; unused ones expire.
        addrs.set(data, timing(previous));
        return goodbye;
      }
      default:
        return false;
    }
  }

  /** The soonest interval (ms) at which records of live instances want a refreshing query (RFC 6762 §5.2), or Infinity. */
  refreshInterval(now: number): number {
    // From 80 % of a record's life, ask again every 5 % of its TTL (at least 1 s apart) until it is refreshed or expires.
    let every = Infinity;
    for (const t of this.liveTimings()) {
      if (now >= t.receivedAt + 0.8 * t.ttlMs && now < t.expiresAt) every = Math.min(every, Math.max(1000, 0.05 * t.ttlMs));
    }
    return every;
  }

  /** Drops expired records, then says which instances came up, changed or went down. */
  update(now: number): Changes {
    this.expire(now);
    const current = new Map<string, ServiceInstance>();
    for (const [key, rec] of this.instancesByName) {
      const { ptr, srv, txt } = rec;
      if (!ptr || !srv || !txt || ptr.expiresAt <= now || srv.expiresAt <= now || txt.expiresAt <= now) continue;
      const addrs = [...(this.hosts.get(srv.target.toLowerCase()) ?? new Map<string, Timed>())].filter(([, t]) => t.expiresAt > now);
      if (addrs.length === 0) continue;
      const expiresAt = Math.min(ptr.expiresAt, srv.expiresAt, txt.expiresAt, Math.max(...addrs.map(([, t]) => t.expiresAt)));
      current.set(key, {
        name: rec.name.replace(/\.$/, ''),
        host: srv.target,
        addresses: addrs.map(([a]) => a).sort(),
        port: srv.port,
        txt: parseTxt(txt.strings),
        ttl: Math.max(0, Math.round((expiresAt - now) / 1000)),
      });
    }
    const changes: Changes = { up: [], down: [] };
    for (const [key, prev] of this.emitted) {
      if (!current.has(key)) {
        this.emitted.delete(key);
        changes.down.push(prev.instance);
      }
    }
    for (const [key, instance] of current) {
      const identity = JSON.stringify([instance.host, instance.addresses, instance.port, instance.txt]);
      const prev = this.emitted.get(key);
      this.emitted.set(key, { instance, key: identity });
      if (prev?.key !== identity) changes.up.push(instance);
    }
    return changes;
  }

  /** Timings of the records of instances that are up (the ones worth keeping fresh). */
  private *liveTimings(): Generator<Timed> {
    for (const name of this.emitted.keys()) {
      const rec = this.instancesByName.get(name);
      if (!rec) continue;
      if (rec.ptr) yield rec.ptr;
      if (rec.srv) {
        yield rec.srv;
        for (const a of this.hosts.get(rec.srv.target.toLowerCase())?.values() ?? []) yield a;
      }
      if (rec.txt) yield rec.txt;
    }
  }

  private expire(now: number): void {
    for (const [key, rec] of this.instancesByName) {
      if (rec.ptr && rec.ptr.expiresAt <= now) rec.ptr = undefined;
      if (rec.srv && rec.srv.expiresAt <= now) rec.srv = undefined;
      if (rec.txt && rec.txt.expiresAt <= now) rec.txt = undefined;
      if (!rec.ptr && !rec.srv && !rec.txt) this.instancesByName.delete(key);
    }
    for (const [host, addrs] of this.hosts) {
      for (const [addr, t] of addrs) if (t.expiresAt <= now) addrs.delete(addr);
      if (addrs.size === 0) this.hosts.delete(host);
    }
  }

  private instanceEntry(key: string, name: string, goodbye: boolean): InstanceRecords | undefined {
    let entry = this.instancesByName.get(key);
    if (!entry) {
      if (goodbye || this.instancesByName.size >= MAX_INSTANCES) return undefined;
      this.instancesByName.set(key, (entry = { name }));
    }
    return entry;
  }
}

/** dns-packet gives TXT data as Buffers (or a string); keep at most a bounded number of UTF-8 strings. */
function txtStrings(data: unknown): string[] {
  const items = Array.isArray(data) ? data : [data];
  const out: string[] = [];
  for (const item of items.slice(0, MAX_TXT_STRINGS)) {
    if (Buffer.isBuffer(item)) out.push(item.subarray(0, MAX_TXT_BYTES).toString('utf8'));
    else if (typeof item === 'string') out.push(item.slice(0, MAX_TXT_BYTES));
  }
  return out;
}

/** DNS-SD TXT strings to pairs (RFC 6763 §6.4: keys are case-insensitive; the first wins; a key without `=` is a flag). */
export function parseTxt(strings: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of strings) {
    const eq = s.indexOf('=');
    const key = (eq < 0 ? s : s.slice(0, eq)).toLowerCase();
    if (!key || key === '__proto__' || Object.hasOwn(out, key)) continue;
    out[key] = eq < 0 ? '' : s.slice(eq + 1);
  }
  return out;
}
