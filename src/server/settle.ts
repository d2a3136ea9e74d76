/** Small promise races the resolver's hedging is made of. */

/** `{ value }` if `p` settles within `ms`, undefined otherwise. */
export async function settledWithin<T>(p: Promise<T>, ms: number): Promise<{ value: T } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([p.then((value) => ({ value })), late]);
  } finally {
    clearTimeout(timer);
  }
}

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
