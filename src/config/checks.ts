import { ConfigError } from '../errors.js';

/** Checkers for the JSON config files (`serve`, `fill`): each returns the value or throws a ConfigError naming where it is. */
export type Checker = (value: unknown, where: string) => unknown;

export const str: Checker = (v, where) => {
  if (typeof v !== 'string') throw new ConfigError(`${where} must be a string`);
  return v;
};
export const strList: Checker = (v, where) => {
  if (!Array.isArray(v)) throw new ConfigError(`${where} must be a list of strings`);
  return v.map((item, i) => str(item, `${where}[${i}]`));
};
export const oneOf = (values: readonly string[]): Checker => (v, where) => {
  if (typeof v !== 'string' || !values.includes(v)) throw new ConfigError(`${where} must be one of ${values.join(', ')}`);
  return v;
};
export const bool: Checker = (v, where) => {
  if (typeof v !== 'boolean') throw new ConfigError(`${where} must be true or false`);
  return v;
};
export const int = (min: number, max: number): Checker => (v, where) => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${where} must be an integer from ${min} to ${max}`);
  return v;
};
export function object(shape: Record<string, Checker>): Checker {
  return (v, where) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(`${where} must be an object`);
    // Own keys only: `__proto__`, `constructor`, `toString` … are unknown keys like any other, not Object.prototype's.
    const unknown = Object.keys(v).filter((k) => !Object.hasOwn(shape, k));
    if (unknown.length) {
      throw new ConfigError(`${where}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (known: ${Object.keys(shape).join(', ')})`);
    }
    return Object.fromEntries(Object.entries(v).map(([k, val]) => [k, shape[k]!(val, `${where}.${k}`)]));
  };
}
