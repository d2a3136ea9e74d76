/** Small promise races the resolver's hedging is made of. */

/** `{ value }` if `p` settles within `ms` of this process being awake (origins/awake-wait.ts), undefined otherwise. */
export { settledWithin } from '../origins/awake-wait.js';

/** The first of two lookups to find something; undefined once both found nothing. */
export function firstDefined<T>(a: Promise<T | undefined>, b: Promise<T | undefined>): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    let pending = 2;
    const settle = (value: T | undefined) => {
      if (value !== undefined) resolve(value);
      else if (--pending === 0) resolve(undefined);
    };
    a.then(settle, reject);
    b.then(settle, reject);
  });
}
