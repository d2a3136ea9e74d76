import { EventEmitter } from 'node:events';
import type { CircuitState } from './breaker.js';
import type { Origin } from './origin.js';

/** Where peers (other machines' shares) go in the asking order: after the LAN caches, before or after the upstreams. */
export type PeerOrder = 'before-upstream' | 'after-upstream';

/**
 * The origins the proxy knows, in the order a lookup asks them: LAN caches by
 * priority (lower first), then peers by priority, then upstreams in
 * configured order (or peers last: `peerOrder`). Discovery adds and removes
 * LAN caches and peers at run time.
 */
export class OriginSet extends EventEmitter<{ up: [Origin]; down: [Origin]; added: [Origin]; removed: [Origin] }> {
  private readonly byId = new Map<string, Origin>();
  private readonly circuitListeners = new Map<Origin, (state: CircuitState) => void>();
  private orderCache: Origin[] | undefined;

  constructor(
    origins: Iterable<Origin> = [],
    private readonly peerOrder: PeerOrder = 'before-upstream',
  ) {
    super();
    for (const o of origins) this.add(o);
  }

  add(origin: Origin): void {
    if (this.byId.has(origin.id)) return;
    this.byId.set(origin.id, origin);
    this.orderCache = undefined;
    const onChange = (state: CircuitState) => this.emit(state === 'closed' ? 'up' : 'down', origin);
    this.circuitListeners.set(origin, onChange);
    origin.breaker.on('change', onChange);
    this.emit('added', origin);
  }

  async remove(id: string): Promise<void> {
    const origin = this.byId.get(id);
    if (!origin) return;
    this.byId.delete(id);
    this.orderCache = undefined;
    const onChange = this.circuitListeners.get(origin);
    if (onChange) origin.breaker.off('change', onChange);
    this.circuitListeners.delete(origin);
    await origin.close();
    this.emit('removed', origin);
  }

  get(id: string): Origin | undefined {
    return this.byId.get(id);
  }

  ordered(): readonly Origin[] {
    if (!this.orderCache) {
      const all = [...this.byId.values()];
      const byPriority = (kind: Origin['kind']) => all.filter((o) => o.kind === kind).sort((a, b) => a.priority - b.priority);
      const [lan, peers, upstreams] = [byPriority('lan'), byPriority('peer'), all.filter((o) => o.kind === 'upstream')];
      this.orderCache = this.peerOrder === 'before-upstream' ? [...lan, ...peers, ...upstreams] : [...lan, ...upstreams, ...peers];
    }
    return this.orderCache;
  }

  async close(): Promise<void> {
    await Promise.all([...this.byId.values()].map((o) => o.close()));
  }
}
