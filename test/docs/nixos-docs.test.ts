import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { evalExpr, evalOk, repoRoot } from '../nix/nix-eval.js';

const doc = (name: string) => readFileSync(join(repoRoot, 'docs', name), 'utf8');

describe('the NixOS pages say what the modules do', () => {
  it('docs/laptop.md: every option of its upstreams table is a client module option', async () => {
    const s = await evalOk(evalExpr({ modules: ['client'], machine: '{ services.nix-lan-cache.enable = true; }' }, 'summary'));
    const declared = Object.keys(s.nixLanCache);
    const text = doc('laptop.md');
    const table = text.slice(text.indexOf('### Your other substituters become upstreams'));
    const named = [...table.matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]!);
    expect(named).toEqual(['upstreams', 'extraUpstreams', 'extraTrustedPublicKeys']);
    for (const option of named) expect(declared, option).toContain(option);
    expect(text).toContain('Restart=always');
  });

  it("docs/sharing.md: its NixOS example evaluates with the client module, shares on 37517 and opens that port", async () => {
    const text = doc('sharing.md');
    const block = /NixOS \(`nixosModules\.default`\):\n\n```nix\n([\s\S]*?)```/.exec(text)![1]!;
    const s = await evalOk(evalExpr({ modules: ['client'], machine: `{ ${block} }` }, 'summary'));
    expect(s.nixLanCache.share).toMatchObject({ enable: true, listen: 'lan:37517', openFirewall: true });
    expect(s.networking.firewall.allowedTCPPorts).toEqual([37517]);
  });

  it.each(['laptop.md', 'pi.md', 'build-server.md'])('docs/%s names Node 24 (nodejs_24)', (name) => {
    const text = doc(name);
    expect(text).toMatch(/Node 24/);
    expect(text).toContain('nodejs_24');
    // No older Node line anywhere (nixpkgs dropped them).
    expect(text).not.toMatch(/Node(\.js)? (1\d|2[0-3])\b|nodejs_(1\d|2[0-3])\b/);
  });
});
