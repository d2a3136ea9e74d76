import type { HttpOrigin } from '../origins/http-origin.js';
import type { BodyFetch, BodyFetchOptions, FetchOptions, FileFetch, NarInfoLookup, Origin } from '../origins/origin.js';

/**
 * A discovered cache's origin: an HttpOrigin that only counts signatures by
 * the announced key, and that reports the cache as refused when it serves a
 * narinfo not signed by that key before it served one that is (a peer: when
 * it serves a forged signature).
 */
export class DiscoveredOrigin implements Origin {
  verified = 0;
  untrusted = 0;

  constructor(
    private readonly http: HttpOrigin,
    readonly keyName: string,
    private readonly refuse: (reason: string) => void,
    /** When it is refused for a narinfo (discovery/roles.ts): a cache's first untrusted one, or a peer's forged one. */
    private readonly refuseOn: 'first-untrusted' | 'forged' = 'first-untrusted',
  ) {}

  get id() {
    return this.http.id;
  }
  get name() {
    return this.http.name;
  }
  get kind() {
    return this.http.kind;
  }
  get baseUrl() {
    return this.http.baseUrl;
  }
  get priority() {
    return this.http.priority;
  }
  get fills() {
    return this.http.fills;
  }
  get breaker() {
    return this.http.breaker;
  }

  async lookupNarInfo(storeHash: string): Promise<NarInfoLookup> {
    const result = await this.http.lookupNarInfo(storeHash);
    if (result.status === 'present') this.verified++;
    else if (result.status === 'absent' && result.reason === 'untrusted') {
      this.untrusted++;
      if (this.refuseOn === 'forged') {
        if (result.forged) this.refuse(`it served ${storeHash}.narinfo with a signature that claims a trusted key (${this.keyName}) and does not verify`);
      } else if (this.verified === 0) this.refuse(`it served ${storeHash}.narinfo without a valid signature by ${this.keyName}, the key it announced`);
    }
    return result;
  }

  fetchFile(path: string, options?: FetchOptions): Promise<FileFetch> {
    return this.http.fetchFile(path, options);
  }

  fetchBody(path: string, options: BodyFetchOptions): Promise<BodyFetch> {
    return this.http.fetchBody(path, options);
  }

  reportFailure(reason: string): void {
    this.http.reportFailure(reason);
  }

  reportProgress(): void {
    this.http.reportProgress();
  }

  close(): Promise<void> {
    return this.http.close();
  }
}
