import { getPriority, setPriority } from 'node:os';

export interface PiPriority {
  /** Command prefix that starts one of the laptop's processes (the proxy, Nix) at the usual priority. */
  laptop: string[];
  /** Back to the priority this process had. */
  restore(): void;
}

/**
 * On the test machine, the Pi (its nginx) and the air between it and the
 * laptop (the link relay, which runs in the test's own process) share two
 * cores with the laptop's proxy and Nix, and with the other test files. A
 * real Pi has its own CPU, and Wi-Fi does not wait for the laptop's: when
 * the test machine is busy, they would go quiet for hundreds of
 * milliseconds, miss deadlines a real Pi meets, and a test that the proxy
 * never leaves a Pi that answers would fail for the test machine's sake.
 *
 * So from now on this process, and what it starts (nginx), runs at a higher
 * priority (nice -10; it needs root, as the suite runs, and changes nothing
 * otherwise), and the laptop's processes are started through `laptop`, which
 * puts them back at the usual priority: the proxy still competes with Nix
 * and everything else on the machine, as on a laptop that builds while it
 * substitutes.
 */
export function piOnItsOwnCpu(): PiPriority {
  const before = getPriority();
  try {
    setPriority(before - 10);
  } catch {
    return { laptop: [], restore: () => {} };
  }
  return {
    laptop: ['nice', '-n', '10'],
    restore: () => setPriority(before),
  };
}
