import type { Origin } from '../../src/origins/origin.js';

/**
 * The file side of a stand-in origin that only answers narinfo lookups (the
 * resolver's unit tests): nothing is ever fetched from it. Spread into the
 * stand-in beside its own `lookupNarInfo`.
 */
export const fetchesNothing: Pick<Origin, 'fetchFile' | 'fetchBody' | 'reportFailure'> = {
  async fetchFile() {
    return { status: 'unknown', cause: 'unreachable', reason: 'not used' };
  },
  async fetchBody() {
    return { status: 'unknown', cause: 'unreachable', reason: 'not used' };
  },
  reportFailure() {},
};
