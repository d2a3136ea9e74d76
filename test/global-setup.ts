import { execFileSync } from 'node:child_process';

/**
 * End-to-end tests run the real CLI from dist/, so build it once first, and
 * type-check the tests. Then say which real Nix clients the client-side tests
 * run (test/helpers/nix-clients.ts): all three must be there, or nothing runs.
 */
export default function setup(): void {
  execFileSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
  execFileSync('npx', ['tsc', '-p', 'test/tsconfig.json'], { stdio: 'inherit' });
  let clients: string;
  try {
    clients = execFileSync('bash', ['.ci/nix-clients', '--check'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`the real Nix clients are not all there; make them with: bash .ci/nix-clients\n${e.stderr ?? ''}`);
  }
  const lines = clients.trim().split('\n').map((l) => l.split(' ')).map(([, suite, version, root]) => `Nix ${version} (${suite === 'bookworm' ? 'Debian 12, this machine' : `Debian ${suite}, chroot ${root}`})`);
  console.log(`Real Nix clients: ${lines.join('; ')}`);
  let engine: string;
  try {
    engine = execFileSync('bash', ['.ci/s3-engine', '--check'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`the real S3 engine is not there; make it with: bash .ci/s3-engine\n${e.stderr ?? ''}`);
  }
  const [, , version, root] = engine.trim().split(' ');
  console.log(`Real S3 engine: Ceph radosgw ${version} (Debian unstable, chroot ${root})`);
}
