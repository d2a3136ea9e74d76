import { describe, expect, it } from 'vitest';
import { parseAnnounceFlags, txtRecords } from '../../src/cli/announce.js';
import type { AnnounceOptions } from '../../src/cli/announce.js';

describe('announce --fill: the TXT record says the cache fills itself', () => {
  it('adds fill=1 with --fill, and nothing without it', () => {
    const withFill = parseAnnounceFlags(['--port', '8080', '--key-name', 'pi.lan-1', '--fill']) as AnnounceOptions;
    expect(txtRecords(withFill)).toEqual({ path: '/', key: 'pi.lan-1', fill: '1' });
    const without = parseAnnounceFlags(['--port', '8080', '--key-name', 'pi.lan-1']) as AnnounceOptions;
    expect(txtRecords(without)).toEqual({ path: '/', key: 'pi.lan-1' });
  });
});
