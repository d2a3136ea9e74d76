import { FLAP_CYCLE, FLAP_PHASE_MS, flappingHouse, soakFlapping, type MemorySample } from '../helpers/flapping.js';
import type { NixClient } from '../helpers/nix-clients.js';
import { log, table, type CaseReport } from './util.js';

export interface SoakBenchOptions {
  durationMs: number;
  sampleEveryMs: number;
  clients: readonly NixClient[];
}

const GOAL_MIB = 150;
const BARS = '▁▂▃▄▅▆▇█';

/**
 * Case 14 (issue 26): the flapping-link soak of test/e2e/flapping-soak.test.ts
 * for half an hour, with the proxy's VmRSS and VmHWM read every 10 s.
 */
export async function runSoak(o: SoakBenchOptions): Promise<CaseReport> {
  log(`case 14: building the 41-path closure and both caches; then ${o.durationMs / 60_000} minutes of flapping with ${o.clients.map((c) => c.name).join(', ')}`);
  const house = await flappingHouse(`bench-soak-${Date.now()}`);
  let lastMinute = 1;
  let minuteStart: { commands: number; failed: number } | undefined;
  const minuteSamples: MemorySample[] = [];
  let r: Awaited<ReturnType<typeof soakFlapping>>;
  try {
    r = await soakFlapping(house, {
      clients: o.clients,
      durationMs: o.durationMs,
      sampleEveryMs: o.sampleEveryMs,
      onSample: (s, atStart) => {
        // A compact line a minute while it runs.
        const minute = Math.floor((s.atMs - 1) / 60_000) + 1;
        if (minute !== lastMinute && minuteSamples.length) {
          const prev = minuteSamples.at(-1)!;
          const rss = minuteSamples.map((x) => x.rssMiB);
          log(`  minute ${lastMinute}: ${prev.commands - (minuteStart ?? atStart).commands} commands, ${prev.failed - (minuteStart ?? atStart).failed} failed; RSS ${Math.min(...rss).toFixed(0)}–${Math.max(...rss).toFixed(0)} MiB, VmHWM ${prev.hwmMiB.toFixed(0)} MiB`);
          minuteStart = { commands: prev.commands, failed: prev.failed };
          minuteSamples.length = 0;
        }
        lastMinute = minute;
        minuteSamples.push(s);
      },
    });
  } finally {
    await house.close();
  }

  const minutes = perMinute(r.samples, r.atStart, Math.max(1, Math.ceil(o.durationMs / 60_000)));
  const all = r.samples.map((s) => s.rssMiB);
  const peak = Math.max(r.startRssMiB, ...all);
  const hwm = r.samples.at(-1)?.hwmMiB ?? NaN;
  const afterFive = minutes.filter((m) => m.minute > 5);
  const lateMax = Math.max(...afterFive.map((m) => m.max));
  const lateMin = Math.min(...afterFive.map((m) => m.min));
  const fiveMax = minutes.find((m) => m.minute === 5)?.max ?? NaN;
  const under = peak < GOAL_MIB && hwm < GOAL_MIB;
  // The bars span from the lowest minute (rounded down to 10 MiB) to the goal or the peak, whichever is higher.
  const floor = Math.floor(Math.min(...minutes.map((m) => m.min)) / 10) * 10;
  const top = Math.max(GOAL_MIB, Math.ceil(peak), floor + 10);
  const flat = afterFive.length === 0 ? 'n/a (a run of 5 minutes or less)' : lateMax - fiveMax <= 10 ? 'met' : 'NOT met';
  log(`case 14: ${r.commands} commands, ${r.failed} failed, proxy ${r.alive ? 'alive' : 'DEAD'}; RSS ${r.startRssMiB.toFixed(0)} → peak ${peak.toFixed(0)} MiB, VmHWM ${hwm.toFixed(0)} MiB`);
  return {
    title: '14. Flapping link for half an hour: proxy memory (real Nix)',
    markdown: [
      `The soak of \`test/e2e/flapping-soak.test.ts\` (\`test/helpers/flapping.ts\`), run for ${+(o.durationMs / 60_000).toFixed(1)} minutes: the Pi (nginx, xz) behind a Wi-Fi link (\`LINKS.wifi\`: 2 ms each way, 100 Mbit/s) that goes ${FLAP_CYCLE.map((m) => (m === 'blackhole' ? 'blackholed' : m)).join(' → ')} every ${FLAP_PHASE_MS / 1000} s, an upstream (nginx, zstd) that always answers, one proxy started as the README starts it (the executable, as \`npx\` runs it, so it re-executes itself with its memory settings; \`--no-mdns\`), and ${o.clients.map((c) => c.name).join(', ')} substituting a 41-path closure (200 kB of text per path) into a fresh store with a fresh narinfo disk cache, command after command. Time 0 is the end of the warm-up (the first command on a steady link, then one whole cycle of the link), when RSS was ${r.startRssMiB.toFixed(0)} MiB. VmRSS and VmHWM of the proxy's PID are read every ${o.sampleEveryMs / 1000} s from \`/proc\`.`,
      '',
      table(
        ['', ''],
        [
          ['commands (warm-up included)', String(r.commands)],
          ['failed commands', String(r.failed)],
          ['link changes', String(r.linkChanges)],
          ['proxy alive at the end', r.alive ? 'yes' : `**no**: ${JSON.stringify(r.lastErrors.at(-1) ?? {}).slice(0, 200)}`],
          ['NARs served from the Pi / upstream', `${r.narsFromPi} / ${r.narsFromUpstream}`],
          ['RSS after the warm-up → peak → last', `${r.startRssMiB.toFixed(0)} → ${peak.toFixed(0)} → ${(all.at(-1) ?? NaN).toFixed(0)} MiB`],
          ['VmHWM at the end (peak RSS of the whole run)', `${hwm.toFixed(0)} MiB`],
        ],
      ),
      '',
      `RSS per minute (maximum; each bar is one minute, ▁ = ${floor} MiB, █ = ${top} MiB): \`${sparkline(minutes.map((m) => m.max), floor, top)}\``,
      '',
      table(
        ['minute', 'commands', 'failed', 'RSS min–max (MiB)', 'VmHWM (MiB)'],
        minutes.map((m) => [String(m.minute), String(m.commands), String(m.failed), `${m.min.toFixed(0)}–${m.max.toFixed(0)}`, m.hwm.toFixed(0)]),
      ),
      '',
      `Goal: RSS under ${GOAL_MIB} MiB for the whole run: **${under ? 'met' : 'NOT met'}**; flat after the first minutes (no minute after the fifth more than 10 MiB above the fifth minute's maximum${afterFive.length ? `, ${fiveMax.toFixed(0)} MiB; after the fifth: ${lateMin.toFixed(0)}–${lateMax.toFixed(0)} MiB` : ''}): **${flat}**. No failed command and the proxy alive: **${r.failed === 0 && r.alive ? 'met' : 'NOT met'}**.`,
    ].join('\n'),
  };
}

interface Minute {
  minute: number;
  commands: number;
  failed: number;
  min: number;
  max: number;
  hwm: number;
}

/** Samples grouped by minute since the warm-up (minute 1 is 0:00–1:00), with the commands that finished in each. */
function perMinute(samples: MemorySample[], atStart: { commands: number; failed: number }, last: number): Minute[] {
  const out: Minute[] = [];
  let before = atStart;
  for (const s of samples) {
    // Samples taken while the last command finished count in the last minute.
    const minute = Math.min(last, Math.floor((s.atMs - 1) / 60_000) + 1);
    let m = out.at(-1);
    if (!m || m.minute !== minute) {
      if (m) before = { commands: before.commands + m.commands, failed: before.failed + m.failed };
      m = { minute, commands: 0, failed: 0, min: s.rssMiB, max: s.rssMiB, hwm: s.hwmMiB };
      out.push(m);
    }
    m.min = Math.min(m.min, s.rssMiB);
    m.max = Math.max(m.max, s.rssMiB);
    m.hwm = s.hwmMiB;
    m.commands = s.commands - before.commands;
    m.failed = s.failed - before.failed;
  }
  return out;
}

function sparkline(values: number[], floor: number, top: number): string {
  return values.map((v) => BARS[Math.min(BARS.length - 1, Math.max(0, Math.round(((v - floor) / (top - floor)) * (BARS.length - 1))))]).join('');
}
