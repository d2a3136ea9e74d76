import { execFile } from 'node:child_process';
import { errorMessage } from '../errors.js';

export type NixValue = string | number | boolean | string[];

export interface NixConfig {
  /** The command that worked. */
  command: string;
  settings: Record<string, NixValue>;
}

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 127) : 0;
      resolve({ code, stdout, stderr: stderr || (err ? errorMessage(err) : '') });
    });
  });
}

/** `{"name": {"value": v, ...}}` (nix show-config --json) or `{"name": v}`. */
export function parseConfigJson(text: string): Record<string, NixValue> {
  const json = JSON.parse(text) as Record<string, unknown>;
  const out: Record<string, NixValue> = {};
  for (const [k, raw] of Object.entries(json)) {
    const v = typeof raw === 'object' && raw !== null && !Array.isArray(raw) && 'value' in raw ? (raw as { value: unknown }).value : raw;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    else if (Array.isArray(v)) out[k] = v.map(String);
  }
  return out;
}

/** `name = value` lines (the text form of either command). */
export function parseConfigText(text: string): Record<string, NixValue> {
  const out: Record<string, NixValue> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9-]+) = ?(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** A list-valued setting, whichever form it came in. */
export function list(v: NixValue | undefined): string[] {
  if (v === undefined) return [];
  if (Array.isArray(v)) return v;
  return String(v).split(/\s+/).filter(Boolean);
}

/**
 * The effective Nix configuration, as Nix itself computes it (nix.conf,
 * NIX_CONF_DIR, NIX_CONFIG, user config): `nix config show` on newer Nix,
 * `nix show-config` on older ones (2.8 has only the latter).
 */
export async function readNixConfig(env: NodeJS.ProcessEnv = process.env, nix = 'nix', timeoutMs = 20_000): Promise<NixConfig> {
  const base = ['--extra-experimental-features', 'nix-command'];
  const attempts: Array<{ args: string[]; json: boolean }> = [
    { args: [...base, 'config', 'show', '--json'], json: true },
    { args: [...base, 'show-config', '--json'], json: true },
    { args: [...base, 'show-config'], json: false },
  ];
  const errors: string[] = [];
  for (const a of attempts) {
    const res = await exec(nix, a.args, env, timeoutMs);
    if (res.code === 127 && /ENOENT/.test(res.stderr)) throw new Error(`cannot run ${nix}: not found on PATH`);
    if (res.code !== 0) {
      errors.push(`${a.args.slice(2).join(' ')}: ${res.stderr.trim().split('\n')[0]}`);
      continue;
    }
    try {
      return { command: `nix ${a.args.slice(2).join(' ')}`, settings: a.json ? parseConfigJson(res.stdout) : parseConfigText(res.stdout) };
    } catch (err) {
      errors.push(`${a.args.slice(2).join(' ')}: ${errorMessage(err)}`);
    }
  }
  throw new Error(`cannot read Nix's configuration: ${errors.join('; ')}`);
}
