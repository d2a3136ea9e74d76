import { execFileSync } from 'node:child_process';

/** End-to-end tests run the real CLI from dist/, so build it once first, and type-check the tests. */
export default function setup(): void {
  execFileSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
  execFileSync('npx', ['tsc', '-p', 'test/tsconfig.json'], { stdio: 'inherit' });
}
