export interface OriginTimeouts {
  /** TCP connect. */
  connectMs: number;
  /** From sending the request to the complete response head. */
  firstByteMs: number;
  /** Longest silence in the middle of a body. */
  bodyIdleMs: number;
  /** Interval of the background probe while the circuit is open. */
  probeIntervalMs: number;
  /** Consecutive failures that open the circuit. */
  maxFails: number;
  /**
   * A narinfo lookup this slow is no longer waited on alone: the next origins
   * are asked alongside, and the first validly signed answer wins (0: never).
   */
  hedgeMs: number;
}

// A LAN cache answers in milliseconds; judge it in well under a second so a
// missing Pi costs one short wait, once. Upstreams are across the internet.
export const DEFAULT_TIMEOUTS: Record<'lan' | 'upstream', OriginTimeouts> = {
  lan: { connectMs: 400, firstByteMs: 800, bodyIdleMs: 5000, probeIntervalMs: 1000, maxFails: 1, hedgeMs: 200 },
  upstream: { connectMs: 5000, firstByteMs: 15000, bodyIdleMs: 30000, probeIntervalMs: 5000, maxFails: 2, hedgeMs: 0 },
};
