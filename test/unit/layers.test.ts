import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The layers of src/, bottom to top (docs/architecture.md). A module may
 * import from its own unit and from units of a lower layer, never from a unit
 * beside it or above it.
 */
const LAYERS: string[][] = [
  ['errors', 'format', 'log', 'atomic-file', 'process-alive', 'memory-governor', 'protocol'],
  ['s3'],
  ['origins'],
  ['discovery', 'stats', 'nar', 'push', 'store', 'config'],
  ['api'],
  ['http'],
  ['server', 'fill', 'doctor', 'share'],
  ['cli'],
];

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** A folder of src/, or a file at its top named without `.ts` (src/stats.ts belongs with src/stats/). */
function unitOf(file: string): string {
  return relative(SRC, file).split('/')[0]!.replace(/\.ts$/, '');
}

function layerOf(unit: string): number {
  const i = LAYERS.findIndex((units) => units.includes(unit));
  if (i < 0) throw new Error(`src/${unit} is in no layer: add it to LAYERS in test/unit/layers.test.ts and to docs/architecture.md`);
  return i;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports of a module, static and dynamic, resolved to files under src/. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'";]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g)].map((m) => m[1] ?? m[2]!);
  return specs.filter((s) => s.startsWith('.')).map((s) => resolve(dirname(file), s.replace(/\.js$/, '.ts')));
}

describe('the import graph of src/', () => {
  const files = sources(SRC);

  it('every unit of src/ belongs to a layer', () => {
    const units = new Set(files.map(unitOf));
    for (const u of units) expect(() => layerOf(u)).not.toThrow();
  });

  it('points one way: no import from a higher layer or a sibling unit', () => {
    const wrong: string[] = [];
    for (const file of files) {
      const from = unitOf(file);
      for (const target of importsOf(file)) {
        const to = unitOf(target);
        if (to === from) continue;
        if (layerOf(to) >= layerOf(from)) wrong.push(`src/${relative(SRC, file)} imports src/${relative(SRC, target)} (${to} is not below ${from})`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('has no file over 300 lines', () => {
    const long = files.map((f) => [relative(SRC, f), readFileSync(f, 'utf8').split('\n').length] as const).filter(([, n]) => n > 300);
    expect(long).toEqual([]);
  });
});
