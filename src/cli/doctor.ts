import { parseCommandArgs } from './args.js';
import { defaultConfig, resolveServeConfig, type ServeFlags } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Finding } from '../doctor/finding.js';
import { readNixConfig, type NixConfig } from '../doctor/nix-config.js';
import { checkKeys, checkNegativeTtl, checkSubstituters, type Expected } from '../doctor/nix-checks.js';
import { askProxy, checkOrigins, checkProxy } from '../doctor/proxy.js';
import { checkShare } from '../doctor/share.js';
import { DEFAULT_URL } from './stats.js';

const HELP = `usage: nix-lan-cache doctor [options]

Checks that Nix, the proxy and the caches fit together, and prints the fix
for each problem. Exit status: 0 when nothing failed, 1 when something did
(with --strict, warnings count too).

  --url URL                  the proxy (default ${DEFAULT_URL}, or the
                             listen address of --config)
  --config FILE              the proxy's JSON config file: its LAN caches,
                             upstreams and keys are what Nix must agree with
  --lan URL                  a LAN cache (repeatable; when the proxy can't say)
  --upstream URL             an upstream (repeatable)
  --trusted-public-key K     a key the proxy trusts (repeatable)
  --json                     print the findings as JSON
  --strict                   exit 1 on warnings too

If the proxy shares this machine's store (serve --share), doctor checks the
share answers on its addresses and counts what it gives away.

The Nix configuration is read with \`nix config show\` (or \`nix show-config\`
on older Nix), so NIX_CONF_DIR, NIX_CONFIG and user nix.conf files count.
`;

const MARK: Record<Finding['level'], string> = { ok: ' ok ', info: 'info', warn: 'WARN', fail: 'FAIL' };

export function formatFindings(findings: Finding[]): string {
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`[${MARK[f.level]}] ${f.message}`);
    if (f.fix && (f.level === 'warn' || f.level === 'fail')) lines.push(`       fix: ${f.fix}`);
  }
  const fails = findings.filter((f) => f.level === 'fail').length;
  const warns = findings.filter((f) => f.level === 'warn').length;
  lines.push('', fails || warns ? `${fails} problem(s), ${warns} warning(s)` : 'all good');
  return lines.join('\n') + '\n';
}

export interface DoctorInput {
  proxyUrl: string;
  lan: string[];
  upstream: string[];
  keys: string[];
  /** Whether lan/upstream/keys came from the user (flags, config) rather than defaults. */
  told: boolean;
  env?: NodeJS.ProcessEnv;
}

export async function diagnose(input: DoctorInput): Promise<Finding[]> {
  const findings: Finding[] = [];
  const view = await askProxy(input.proxyUrl);
  findings.push(checkProxy(input.proxyUrl, view));
  const want: Expected = { proxyUrl: input.proxyUrl, lan: [...input.lan], upstream: [...input.upstream], keys: [...input.keys] };
  const running = view.stats?.proxy;
  if (running) {
    // What the running proxy uses wins over defaults; the user's own flags are added.
    const add = (to: string[], from: string[]) => from.forEach((x) => !to.includes(x) && to.push(x));
    if (!input.told) {
      want.lan = [];
      want.upstream = [];
      want.keys = [];
    }
    add(want.lan, running.lan);
    add(want.upstream, running.upstream);
    add(want.keys, running.trustedPublicKeys);
    for (const o of view.health?.origins ?? []) if (o.kind === 'lan') add(want.lan, [o.url]);
  } else if (!input.told) {
    findings.push({
      id: 'proxy-config-unknown',
      level: 'info',
      message: 'the proxy is not answering and no --config/--lan/--trusted-public-key was given: checking against the default setup (cache.nixos.org only)',
    });
  }

  let nix: NixConfig | undefined;
  try {
    nix = await readNixConfig(input.env ?? process.env);
    findings.push({ id: 'nix-config', level: 'ok', message: `read Nix's configuration with \`${nix.command}\`` });
  } catch (err) {
    findings.push({
      id: 'nix-config-unreadable',
      level: 'fail',
      message: errorMessage(err),
      fix: 'install Nix or put `nix` on PATH; doctor needs its effective configuration',
    });
  }
  if (nix) {
    findings.push(...checkSubstituters(nix, want));
    findings.push(...checkKeys(nix, want));
    findings.push(checkNegativeTtl(nix, want));
  }
  if (view.health) findings.push(...(await checkOrigins(view)));
  if (view.share) findings.push(...(await checkShare(view.share, want.keys)));
  return findings;
}

export async function run(argv: string[]): Promise<number> {
  const values: ServeFlags & { url?: string; json?: boolean; strict?: boolean } = parseCommandArgs(
    'doctor',
    argv,
    {
      url: { type: 'string' },
      config: { type: 'string' },
      lan: { type: 'string', multiple: true },
      upstream: { type: 'string', multiple: true },
      'trusted-public-key': { type: 'string', multiple: true },
      json: { type: 'boolean' },
      strict: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  ).values;
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const told = Boolean(values.config || values.lan || values.upstream || values['trusted-public-key']);
  const flags: ServeFlags = {};
  if (values.config) flags.config = values.config;
  if (values.lan) flags.lan = values.lan;
  if (values.upstream) flags.upstream = values.upstream;
  if (values['trusted-public-key']) flags['trusted-public-key'] = values['trusted-public-key'];
  const config = told ? resolveServeConfig(flags) : defaultConfig();
  const listenHost = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const proxyUrl = (values.url ?? (values.config ? `http://${listenHost}:${config.listen.port}` : DEFAULT_URL)).replace(/\/+$/, '');
  const findings = await diagnose({ proxyUrl, lan: [...config.lan, ...config.lanFill], upstream: config.upstream, keys: config.trustedPublicKeys, told });
  process.stdout.write(values.json ? `${JSON.stringify({ proxyUrl, findings }, null, 2)}\n` : formatFindings(findings));
  const bad = findings.some((f) => f.level === 'fail' || (values.strict && f.level === 'warn'));
  return bad ? 1 : 0;
}
