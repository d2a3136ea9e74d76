import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

/**
 * The real Nix clients every client-side test runs with (docs/nix-versions.md):
 * Debian 12's nix-bin on this machine (2.8), and Debian trixie's (2.26) and
 * unstable's (2.34, or whatever sid ships) in chroots that `.ci/nix-clients`
 * makes and keeps. A client that is missing is an error at import, with the
 * reason: no test is skipped for want of a client.
 */
export interface NixClient {
  /** The Debian suite it comes from. */
  suite: 'bookworm' | 'trixie' | 'sid';
  /** What its nix-store --version says, e.g. "2.34.8". */
  version: string;
  /** For test titles: "Nix 2.34.8 (sid)". */
  name: string;
  /** The root to chroot into; undefined for this machine's own Nix. */
  root: string | undefined;
  /** Major.minor as numbers, to compare: [2, 34]. */
  release: [number, number];
  /**
   * `cmd` as this client runs it: unchanged for this machine's Nix; in its
   * chroot (own mount namespace, /proc and /dev mounted, and `binds`, the
   * test's directories, bound at the same paths) otherwise. The chroot shares
   * the network namespace, so 127.0.0.1 is the test's loopback.
   */
  wrap(cmd: string[], binds?: string[]): string[];
}

const SCRIPT = fileURLToPath(new URL('../../.ci/nix-clients', import.meta.url));

/**
 * Binds each directory up to `--`, then mounts /proc and /dev, then execs the
 * command in the chroot. Positional: ROOT DIR... -- CMD ARGS...
 */
const CHROOT = [
  'r=$1; shift',
  'while [ "$1" != -- ]; do mkdir -p "$r$1" && mount --bind "$1" "$r$1" || exit 125; shift; done; shift',
  'mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" || exit 125',
  'exec chroot "$r" "$@"',
].join('\n');

function client(suite: NixClient['suite'], version: string, root: string | undefined): NixClient {
  const [major, minor] = version.split('.').map(Number);
  return {
    suite,
    version,
    name: `Nix ${version} (${suite})`,
    root,
    release: [major ?? 0, minor ?? 0],
    wrap(cmd, binds = []) {
      if (!root) return cmd;
      const dirs = [...new Set([tmpdir(), ...binds])];
      return ['unshare', '-m', '--propagation', 'private', 'sh', '-c', CHROOT, 'sh', root, ...dirs, '--', ...cmd];
    },
  };
}

function load(): NixClient[] {
  let out: string;
  try {
    out = execFileSync('bash', [SCRIPT, '--check'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`the real Nix clients the tests need are not all there (make them with: bash .ci/nix-clients):\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
  const clients: NixClient[] = [];
  for (const line of out.split('\n')) {
    const m = /^nix-client (bookworm|trixie|sid) (\S+) (\S+)$/.exec(line);
    if (m) clients.push(client(m[1] as NixClient['suite'], m[2]!, m[3] === '/' ? undefined : m[3]));
  }
  if (clients.length !== 3) throw new Error(`expected three Nix clients from .ci/nix-clients, got:\n${out}`);
  return clients;
}

/** 2.8 (this machine's), 2.26 and 2.34, in that order. */
export const NIX_CLIENTS: readonly NixClient[] = load();

/** This machine's own Nix (Debian 12's 2.8): what builds the test closures and fills the caches. */
export const HOST_NIX: NixClient = NIX_CLIENTS.find((c) => c.root === undefined)!;
