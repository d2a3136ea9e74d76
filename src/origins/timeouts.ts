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
//
// A LAN cache that fills from upstream (lanFill) answers a miss only after
// asking upstream itself, so its first byte can take as long as upstream's
// over the household's link (a TLS handshake and a narinfo over a 600 ms
// satellite RTT is ~2.5 s): it gets 5 s, and is never hedged. Connecting is
// still a LAN matter (400 ms), so a Pi that is away costs what it costs today.
//
// A peer (another machine's share) is a LAN machine that may close its lid
// at any moment: judged like a Pi.
export const DEFAULT_TIMEOUTS: Record<'lan' | 'lanFill' | 'peer' | 'upstream', OriginTimeouts> = {
  lan: { connectMs: 400, firstByteMs: 800, bodyIdleMs: 5000, probeIntervalMs: 1000, maxFails: 1, hedgeMs: 200 },
  peer: { connectMs: 400, firstByteMs: 800, bodyIdleMs: 5000, probeIntervalMs: 1000, maxFails: 1, hedgeMs: 200 },
  lanFill: { connectMs: 400, firstByteMs: 5000, bodyIdleMs: 15000, probeIntervalMs: 1000, maxFails: 1, hedgeMs: 0 },
  upstream: { connectMs: 5000, firstByteMs: 15000, bodyIdleMs: 30000, probeIntervalMs: 5000, maxFails: 2, hedgeMs: 0 },
};
