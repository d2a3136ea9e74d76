import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ConfigError } from '../errors.js';
import { mapLimit } from './limit.js';
import { CACHE_INFO, TargetError, tempName, type CacheTarget } from './target.js';

export interface SshUrl {
  user?: string;
  host: string;
  port?: number;
  path: string;
}

/** Parses `ssh://[user@]host[:port]/path` (the path is absolute on the remote machine). */
export function parseSshUrl(url: string): SshUrl {
  const m = /^ssh:\/\/(?:([^@/:]+)@)?(\[[0-9a-fA-F:]+\]|[^@/:[\]]+)(?::(\d{1,5}))?(\/.*)$/.exec(url);
  if (!m) throw new ConfigError(`bad ssh target ${JSON.stringify(url)}: expected ssh://[user@]host[:port]/path`);
  const [, user, host, port, path] = m;
  const out: SshUrl = { host: host!.replace(/^\[|\]$/g, ''), path: path!.replace(/\/+$/, '') || '/' };
  if (user) out.user = user;
  if (port) {
    const n = Number(port);
    if (n < 1 || n > 65535) throw new ConfigError(`bad port in ssh target ${JSON.stringify(url)}`);
    out.port = n;
  }
  return out;
}

/** Quotes a word for the remote POSIX shell. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Splits NIX_SSHOPTS-style option strings on whitespace, as Nix does. */
export function splitSshOpts(text: string | undefined): string[] {
  return (text ?? '').split(/\s+/).filter(Boolean);
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * A cache directory on another machine, written through the system's OpenSSH
 * client over one multiplexed (ControlMaster) connection: existence checks are
 * batched shell loops, uploads are `dd of=TEMP conv=fsync` fed from our stdin
 * followed by `mv`.
 */
export class SshTarget implements CacheTarget {
  private controlDir: string | undefined;
  private readonly dir: string;

  constructor(
    private readonly url: SshUrl,
    private readonly extraOpts: string[],
    private readonly checkConcurrency = 4,
  ) {
    this.dir = url.path;
  }

  get description(): string {
    const { user, host, port, path } = this.url;
    return `ssh://${user ? `${user}@` : ''}${host}${port ? `:${port}` : ''}${path}`;
  }

  private sshArgs(): string[] {
    const args = ['-o', 'BatchMode=yes', '-o', 'ServerAliveInterval=15'];
    if (this.controlDir) args.push('-o', 'ControlMaster=auto', '-o', `ControlPath=${join(this.controlDir, 'cm')}`, '-o', 'ControlPersist=120');
    if (this.url.port) args.push('-p', String(this.url.port));
    args.push(...this.extraOpts);
    args.push(this.url.user ? `${this.url.user}@${this.url.host}` : this.url.host);
    return args;
  }

  private p(rel: string): string {
    return shQuote(`${this.dir}/${rel}`);
  }

  /** Runs a remote shell command, optionally feeding `input` to its stdin. */
  private run(command: string, input?: Readable | string): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const child = spawn('ssh', [...this.sshArgs(), command], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', (err) => reject(new TargetError(`cannot run ssh: ${err.message}`)));
      let inputErr: unknown;
      const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
      if (input === undefined) child.stdin.end();
      else if (typeof input === 'string') child.stdin.end(input);
      else {
        pipeline(input, child.stdin).catch((err: unknown) => {
          inputErr = err;
          if (child.exitCode === null) child.kill('SIGTERM');
        });
      }
      child.stdin.on('error', () => {});
      void closed.then((code) => {
        if (inputErr) reject(inputErr);
        else resolve({ code, stdout, stderr });
      });
    });
  }

  private async runOk(command: string, what: string, input?: Readable | string): Promise<string> {
    const res = await this.run(command, input);
    if (res.code !== 0) throw new TargetError(`${this.description}: ${what} failed (exit ${res.code}): ${res.stderr.trim().slice(0, 500)}`);
    return res.stdout;
  }

  async open(dryRun: boolean): Promise<void> {
    this.controlDir = await mkdtemp(join(tmpdir(), 'nlc-ssh-'));
    const d = shQuote(this.dir);
    const script = dryRun
      ? `test ! -e ${d} || test -d ${d}`
      : [
          `mkdir -p ${d}/nar ${d}/roots`,
          `test -w ${d}`,
          `{ test -e ${d}/nix-cache-info || { t=${d}/${tempName('')}; printf '%s' ${shQuote(CACHE_INFO)} > "$t" && mv -f "$t" ${d}/nix-cache-info; }; }`,
        ].join(' && ');
    await this.runOk(script, dryRun ? 'checking the cache directory' : 'preparing the cache directory (is it writable?)');
  }

  async existingNarInfos(hashes: string[], touch: boolean): Promise<Set<string>> {
    const found = new Set<string>();
    const batches: string[][] = [];
    for (let i = 0; i < hashes.length; i += 400) batches.push(hashes.slice(i, i + 400));
    await mapLimit(batches, this.checkConcurrency, async (batch) => {
      // Hashes are nix32 (checked by the caller), safe unquoted.
      const out = await this.runOk(`cd ${shQuote(this.dir)} && for h in ${batch.join(' ')}; do test -e "$h.narinfo" && ${touch ? 'touch -c "$h.narinfo" && ' : ''}echo "$h"; done; true`, 'existence check');
      for (const line of out.split('\n')) if (batch.includes(line)) found.add(line);
    });
    return found;
  }

  async uploadTemp(dir: string, source: Readable): Promise<string> {
    const rel = tempName(dir);
    try {
      await this.runOk(`dd of=${this.p(rel)} bs=1M conv=fsync status=none`, `upload of ${rel}`, source);
    } catch (err) {
      await this.discard(rel);
      throw err;
    }
    return rel;
  }

  async commit(temp: string, final: string): Promise<void> {
    await this.runOk(`mv -f ${this.p(temp)} ${this.p(final)}`, `rename to ${final}`);
  }

  async discard(temp: string): Promise<void> {
    await this.run(`rm -f ${this.p(temp)}`).catch(() => undefined);
  }

  async publishNarInfo(hash: string, text: string, narFile: string): Promise<void> {
    const temp = tempName('', '.narinfo');
    const script = [
      `dd of=${this.p(temp)} conv=fsync status=none`,
      `{ test -e ${this.p(narFile)} && touch -c ${this.p(narFile)} || { rm -f ${this.p(temp)}; echo "NAR ${narFile} is missing" >&2; exit 3; }; }`,
      `mv -f ${this.p(temp)} ${this.p(`${hash}.narinfo`)}`,
    ].join(' && ');
    await this.runOk(script, `publishing ${hash}.narinfo`, text);
  }

  async writeFile(rel: string, text: string): Promise<void> {
    const slash = rel.lastIndexOf('/');
    const dir = slash >= 0 ? rel.slice(0, slash) : '';
    const temp = tempName(dir);
    await this.runOk(`mkdir -p ${this.p(dir || '.')} && dd of=${this.p(temp)} conv=fsync status=none && mv -f ${this.p(temp)} ${this.p(rel)}`, `writing ${rel}`, text);
  }

  async close(): Promise<void> {
    if (!this.controlDir) return;
    await new Promise<void>((resolve) => {
      const child = spawn('ssh', ['-O', 'exit', ...this.sshArgs()], { stdio: 'ignore' });
      child.on('error', () => resolve());
      child.on('close', () => resolve());
    });
    await rm(this.controlDir, { recursive: true, force: true });
    this.controlDir = undefined;
  }
}
