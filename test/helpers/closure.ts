import { runOk } from './proc.js';
import { nixEnv, removeAfterFile } from './nix.js';

export interface LayeredShape {
  /** Levels below the root. */
  levels: number;
  /** Paths per level. */
  width: number;
  /** References of each path to the level below (the deepest level has none). */
  fanout: number;
  /** Bytes of text (base64 of random bytes: xz gets it to ~75%) per path. */
  bytes: number;
}

export interface LayeredClosure {
  root: string;
  paths: string[];
  /** Levels of the closure under the root: each costs Nix one round of narinfo queries. */
  depth: number;
}

/**
 * A closure shaped like a real one, built by real Nix: a root that refers to
 * every path of the first level, each path referring to `fanout` paths of the
 * next level, `levels` deep. Nix learns a level only from the narinfos of the
 * level above, so the depth is what prefetching can win on.
 */
export async function buildLayeredClosure(salt: string, shape: LayeredShape): Promise<LayeredClosure> {
  const name = (l: number, i: number) => `p${l}_${i}`;
  const drv = (n: string, refs: string[]) =>
    `derivation { name = ${JSON.stringify(`${salt}-${n}`)}; system = builtins.currentSystem; builder = "/bin/sh"; ` +
    `args = [ "-c" "echo ${refs.map((r) => `\${${r}}`).join(' ')} > $out; /usr/bin/base64 -w 76 /dev/urandom | /usr/bin/head -c ${shape.bytes} >> $out" ]; }`;
  const bindings: string[] = [];
  for (let l = 0; l < shape.levels; l++) {
    for (let i = 0; i < shape.width; i++) {
      const refs = l + 1 < shape.levels ? Array.from({ length: shape.fanout }, (_, k) => name(l + 1, (i + k) % shape.width)) : [];
      bindings.push(`${name(l, i)} = ${drv(name(l, i), refs)};`);
    }
  }
  const root = drv('root', Array.from({ length: shape.width }, (_, i) => name(0, i)));
  const expr = `let ${bindings.join('\n')} in ${root}`;
  const out = (await runOk('nix-build', ['--no-out-link', '--max-jobs', '4', '-E', expr], { env: nixEnv(), timeoutMs: 900_000 })).trim();
  const paths = (await runOk('nix-store', ['-qR', out], { env: nixEnv() })).trim().split('\n');
  const expected = shape.levels * shape.width + 1;
  if (paths.length !== expected) throw new Error(`closure of ${out} has ${paths.length} paths, expected ${expected}`);
  removeAfterFile(out);
  return { root: out, paths, depth: shape.levels };
}
