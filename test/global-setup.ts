import { execFileSync } from 'node:child_process';

/** End-to-end tests run the real CLI from dist/, so build it once first. */
export default function setup(): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
}
